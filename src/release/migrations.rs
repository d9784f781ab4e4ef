//! Which migration scripts a version brings that the database has not run: the scripts' versions
//! from their file names (Flyway's `V2_1__add_tax.sql`, or a leading number as in
//! `0003_add_tax.sql` / `20240101120000_add_tax.up.sql`), and the schema's version from what the
//! migration tool printed (Flyway's `now at version v5`, `Migrating schema "public" to version
//! "5 - add tax"`, `Current version of schema "public": 5`).
//!
//! Repeatable (`R__…`) and undo (`U…`) scripts and down migrations have no place in that order
//! and are left out.

use std::cmp::Ordering;

/// A migration version: its numeric parts, trailing zeros dropped (`1.0` is `1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersion(Vec<u64>);

impl SchemaVersion {
    /// `5`, `1.2`, `1_2`, `v5`; `None` for anything else.
    pub fn parse(text: &str) -> Option<SchemaVersion> {
        let text = text.trim().trim_start_matches(['v', 'V']);
        if text.is_empty() {
            return None;
        }
        let mut parts = text.split(['.', '_']).map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<u64>>>()?;
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        Some(SchemaVersion(parts))
    }

    /// The empty schema: every script is newer.
    pub fn empty() -> SchemaVersion {
        SchemaVersion(Vec::new())
    }
}

impl Ord for SchemaVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for SchemaVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("empty");
        }
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// The version a script's file name gives it, if it is a versioned (forward) migration.
pub fn script_version(file_name: &str) -> Option<SchemaVersion> {
    let name = file_name.rsplit('/').next().unwrap_or(file_name);
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".down.sql") || !(lower.ends_with(".sql") || lower.ends_with(".java") || lower.ends_with(".kt")) {
        return None;
    }
    // Flyway: V<version>__<description>.
    if let Some(rest) = name.strip_prefix('V') {
        let (version, _) = rest.split_once("__")?;
        return SchemaVersion::parse(version);
    }
    // Otherwise a leading number: 0003_add_tax.sql, 20240101120000_add_tax.up.sql.
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    SchemaVersion::parse(&digits)
}

/// The schema version the migration tool's output says the database is at after it ran.
pub fn reported_version(output: &str) -> Option<SchemaVersion> {
    let mut migrated_to = None;
    let mut current = None;
    for line in output.lines() {
        let line = line.trim();
        if let Some((_, rest)) = line.split_once("now at version ") {
            // "Successfully applied 2 migrations to schema "public", now at version v5 (execution time …)"
            if let Some(v) = rest.split_whitespace().next().and_then(|v| SchemaVersion::parse(v.trim_end_matches([',', '.']))) {
                return Some(v);
            }
        } else if let Some((_, rest)) = line.split_once(" to version ") {
            // Migrating schema "public" to version "5 - add tax"
            let quoted = rest.trim().trim_matches('"');
            migrated_to = quoted.split(" - ").next().and_then(SchemaVersion::parse).or(migrated_to);
        } else if let Some((_, rest)) = line.split_once("Current version of schema ").and_then(|(_, r)| r.split_once(": ")) {
            current = if rest.contains("Empty Schema") { Some(SchemaVersion::empty()) } else { SchemaVersion::parse(rest).or(current) };
        }
    }
    migrated_to.or(current)
}

/// The scripts (file names) newer than `applied`, oldest first.
pub fn pending(files: &[String], applied: &SchemaVersion) -> Vec<(SchemaVersion, String)> {
    let mut out: Vec<(SchemaVersion, String)> = files
        .iter()
        .filter_map(|f| {
            let name = f.rsplit('/').next().unwrap_or(f).to_string();
            script_version(&name).filter(|v| v > applied).map(|v| (v, name))
        })
        .collect();
    out.sort();
    out
}

/// Every versioned script among `files`, oldest first.
pub fn versioned(files: &[String]) -> Vec<(SchemaVersion, String)> {
    pending(files, &SchemaVersion(vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> SchemaVersion {
        SchemaVersion::parse(text).unwrap()
    }

    #[test]
    fn script_names_give_their_versions() {
        assert_eq!(script_version("V1__init.sql"), Some(v("1")));
        assert_eq!(script_version("V2_1__add_tax.sql"), Some(v("2.1")));
        assert_eq!(script_version("V2.1.0__add_tax.sql"), Some(v("2.1")));
        assert_eq!(script_version("db/migration/V10__big.sql"), Some(v("10")));
        assert_eq!(script_version("0003_add_tax.sql"), Some(v("3")));
        assert_eq!(script_version("20240101120000_add_tax.up.sql"), Some(v("20240101120000")));
        for other in ["R__views.sql", "U2__undo.sql", "0003_add_tax.down.sql", "README.md", "V2_add_tax.sql", "Vx__bad.sql", "notes.sql"] {
            assert_eq!(script_version(other), None, "{other}");
        }
    }

    #[test]
    fn versions_order_by_their_numbers_not_their_text() {
        assert!(v("10") > v("9"));
        assert!(v("2.10") > v("2.9"));
        assert_eq!(v("1.0"), v("1"));
        assert!(v("1") > SchemaVersion::empty());
    }

    #[test]
    fn flyway_output_says_where_the_schema_is() {
        let migrate = "Flyway Community Edition 9.22.3 by Redgate\n\
            Database: jdbc:postgresql://db:5432/invoiceme (PostgreSQL 15.4)\n\
            Successfully validated 6 migrations (execution time 00:00.021s)\n\
            Current version of schema \"public\": 4\n\
            Migrating schema \"public\" to version \"5 - add tax\"\n\
            Migrating schema \"public\" to version \"6 - index invoices\"\n\
            Successfully applied 2 migrations to schema \"public\", now at version v6 (execution time 00:00.040s)";
        assert_eq!(reported_version(migrate), Some(v("6")));
        let without_summary = "Current version of schema \"public\": 4\nMigrating schema \"public\" to version \"5 - add tax\"";
        assert_eq!(reported_version(without_summary), Some(v("5")));
        let up_to_date = "Current version of schema \"public\": 6\nSchema \"public\" is up to date. No migration necessary.";
        assert_eq!(reported_version(up_to_date), Some(v("6")));
        assert_eq!(reported_version("Current version of schema \"public\": << Empty Schema >>"), Some(SchemaVersion::empty()));
        assert_eq!(reported_version("migrated fine"), None);
    }

    #[test]
    fn pending_lists_the_newer_scripts_in_order() {
        let files: Vec<String> = ["V1__init.sql", "V10__tenants.sql", "V2__add_tax.sql", "R__views.sql", "V3__index.sql"].iter().map(|s| s.to_string()).collect();
        let names = |list: Vec<(SchemaVersion, String)>| list.into_iter().map(|(_, n)| n).collect::<Vec<_>>();
        assert_eq!(names(pending(&files, &v("2"))), ["V3__index.sql", "V10__tenants.sql"]);
        assert_eq!(names(pending(&files, &v("10"))), Vec::<String>::new());
        assert_eq!(names(versioned(&files)), ["V1__init.sql", "V2__add_tax.sql", "V3__index.sql", "V10__tenants.sql"]);
    }
}
