PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE IF NOT EXISTS "kolibriauth_facilityuser" ("id" char(32) NOT NULL PRIMARY KEY, "password" varchar(128) NOT NULL, "last_login" datetime NULL, "username" varchar(30) NOT NULL, "full_name" varchar(120) NOT NULL, "date_joined" datetime NOT NULL, "facility_id" char(32) NOT NULL REFERENCES "kolibriauth_facility" ("id") DEFERRABLE INITIALLY DEFERRED, "extra_demographics" text NULL CHECK ((JSON_VALID("extra_demographics") OR "extra_demographics" IS NULL)));
INSERT INTO kolibriauth_facilityuser VALUES('a1','pbkdf2$x',NULL,'admin','Διαχειριστής','2026-11-01 09:00:00','f1',NULL);
INSERT INTO kolibriauth_facilityuser VALUES('b2','pbkdf2$y',NULL,'kk-learner-1','Μαθήτρια O''Neil, (Β1)','2026-11-02 09:00:00','f1','{"gender": "NOT_SPECIFIED"}');
CREATE TABLE IF NOT EXISTS "kolibriauth_facility" ("id" char(32) NOT NULL PRIMARY KEY, "name" varchar(100) NOT NULL);
INSERT INTO kolibriauth_facility VALUES('f1','Δήμος Χερσονήσου');
COMMIT;
