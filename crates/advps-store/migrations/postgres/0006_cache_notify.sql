-- Instances cache API keys and services in memory. A change to either
-- table, by any instance or by the command line, notifies the channel
-- `advps_cache` when its transaction commits, and every instance listening
-- drops its cache. Statement-level triggers: one notification per
-- statement at most, and PostgreSQL folds identical notifications of one
-- transaction into one.
CREATE FUNCTION advps_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('advps_cache', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_cache_notify
    AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION advps_cache_notify();

CREATE TRIGGER services_cache_notify
    AFTER INSERT OR UPDATE OR DELETE ON services
    FOR EACH STATEMENT EXECUTE FUNCTION advps_cache_notify();

CREATE TRIGGER accounts_cache_notify
    AFTER UPDATE OR DELETE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION advps_cache_notify();
