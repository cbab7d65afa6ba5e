-- The login name of an OS image, as an operator set it; NULL means the
-- default for the OS (Administrator for Windows, root otherwise).
ALTER TABLE os_images ADD COLUMN username TEXT;

-- Services installed with Windows were recorded as root; their login name
-- is Administrator.
UPDATE services SET username = 'Administrator'
WHERE username = 'root'
  AND (LOWER(os_slug) LIKE 'win%' OR LOWER(os_slug) LIKE '%windows%'
       OR LOWER(os_name) LIKE 'win%' OR LOWER(os_name) LIKE '%windows%');
