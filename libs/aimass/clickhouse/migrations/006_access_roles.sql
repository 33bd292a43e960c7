-- requires-server: 20.5
-- requires-sql-access-control
-- The roles of the two database users (aimass.clickhouse.users; docs/threat-model.md):
--
-- {db}_sink_role      the sink's: INSERT into the database's tables, nothing else (no SELECT, no DDL,
--                     no other database). ClickHouse also wants SELECT on a table that feeds a
--                     materialized view from whoever inserts into it; aimass.clickhouse.users grants
--                     that on exactly those tables.
-- {db}_reader_role    analysts' and Grafana's: SELECT on the database, with the settings profile
--                     {db}_reader_profile (readonly=1: no writes, no DDL, no changing settings).
--
-- The users themselves, with their passwords, are not here: `aimass stack init` creates them from
-- AIMASS_CLICKHOUSE_{SINK,READER}_USER and _PASSWORD[_FILE] after the migrations (only the password's
-- SHA-256 goes to the server). SQL users need ClickHouse 20.5 and a writable user directory (the
-- default config has one); the user running migrations needs access_management (or the grants
-- CREATE ROLE, CREATE USER, ROLE ADMIN, and the grants it hands on, WITH GRANT OPTION).
-- On 18.16 this file waits, unrecorded; the users are users.xml entries there.

CREATE ROLE IF NOT EXISTS {db}_sink_role;
GRANT INSERT ON {db}.* TO {db}_sink_role;
CREATE ROLE IF NOT EXISTS {db}_reader_role;
GRANT SELECT ON {db}.* TO {db}_reader_role;
CREATE SETTINGS PROFILE IF NOT EXISTS {db}_reader_profile SETTINGS readonly = 1 TO {db}_reader_role;
