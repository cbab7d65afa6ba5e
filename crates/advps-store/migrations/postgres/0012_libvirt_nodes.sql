-- libvirt nodes (KVM/QEMU hosts reached through a libvirt connection URI)
-- beside LXD and Proxmox VE.
ALTER TABLE nodes DROP CONSTRAINT nodes_driver_check;
ALTER TABLE nodes ADD CONSTRAINT nodes_driver_check
    CHECK (driver IN ('lxd', 'proxmox', 'libvirt'));
