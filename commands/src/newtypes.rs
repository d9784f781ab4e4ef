//! Validated values: once built, a `Version`, `EnvName`, `ServiceName` or `DeploymentId` is
//! known to be well-formed and nothing downstream checks it again.

use std::fmt;
use std::str::FromStr;

use crate::text::{echo, shorten};

/// Docker's limit on the length of an image tag.
const MAX_TAG_LEN: usize = 128;
/// Longest environment or service name: `[a-z0-9][a-z0-9_-]{0,62}`.
const MAX_NAME_LEN: usize = 63;

/// A release tag such as `v1.0.0` or `v1.2.3-rc.1`, also usable as a Docker image tag.
///
/// The form is `v` + `MAJOR.MINOR.PATCH` (no leading zeros) + an optional `-prerelease` made
/// of dot-separated, non-empty runs of `[0-9A-Za-z-]`; at most 128 characters; no build
/// metadata (`+…` is not a valid Docker tag character).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the tag has a `-prerelease` part (`v1.2.3-rc.1`).
    pub fn is_prerelease(&self) -> bool {
        self.0.contains('-')
    }
}

const VERSION_FORM: &str = "versions are tags like v1.0.0 or v1.2.3-rc.1";

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_TAG_LEN {
            return Err(format!(
                "version {} is too long — a tag has at most {MAX_TAG_LEN} characters",
                echo(s)
            ));
        }
        if let Some((_, build)) = s.split_once('+') {
            return Err(format!(
                "malformed version {} — build metadata (+{}) cannot be part of a Docker tag; {VERSION_FORM}",
                echo(s),
                shorten(build)
            ));
        }
        match s.strip_prefix('v') {
            Some(rest) if is_semver(rest) => Ok(Version(s.to_string())),
            _ => {
                let bare = s.strip_prefix(['V', 'v']).unwrap_or(s);
                if is_semver(bare) {
                    Err(format!(
                        "malformed version {} — did you mean v{bare}? {VERSION_FORM}",
                        echo(s)
                    ))
                } else {
                    Err(format!("malformed version {} — {VERSION_FORM}", echo(s)))
                }
            }
        }
    }
}

/// `MAJOR.MINOR.PATCH[-prerelease]` without the leading `v`.
fn is_semver(s: &str) -> bool {
    let (core, prerelease) = match s.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (s, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric = |n: &&str| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n.len() == 1 || !n.starts_with('0'))
    };
    numbers.len() == 3
        && numbers.iter().all(numeric)
        && prerelease.is_none_or(|pre| {
            pre.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        })
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `[a-z0-9][a-z0-9_-]{0,62}`, the form shared by environment and service names.
fn check_name(kind: &str, s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if first_ok && rest_ok && s.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(format!(
            "malformed {kind} name {} — {kind} names are 1 to {MAX_NAME_LEN} lowercase letters, digits, - and _, starting with a letter or digit",
            echo(s)
        ))
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks the form `[a-z0-9][a-z0-9_-]{0,62}`.
            pub fn new(name: &str) -> Result<Self, String> {
                check_name($kind, name).map(|()| $name(name.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The canonical name of an environment (`production`), never an alias.
    EnvName,
    "environment"
);

name_type!(
    /// The name of a service as the config declares it (`backend`).
    ServiceName,
    "service"
);

/// A deployment's short id, shown as `#42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(u64);

impl DeploymentId {
    pub fn new(id: u64) -> Self {
        DeploymentId(id)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for DeploymentId {
    fn from(id: u64) -> Self {
        DeploymentId(id)
    }
}

/// Accepts `#42` or `42`; ids start at 1.
impl FromStr for DeploymentId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('#').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "malformed deployment id {} — ids look like #42",
                echo(s)
            ));
        }
        match digits.parse::<u64>() {
            Ok(0) => Err("there is no deployment #0 — ids start at #1".to_string()),
            Ok(id) => Ok(DeploymentId(id)),
            Err(_) => Err(format!("deployment id {} is too large", echo(s))),
        }
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_tags_are_versions() {
        for tag in [
            "v1.0.0",
            "v0.0.1",
            "v10.20.30",
            "v1.2.3-rc.1",
            "v1.2.3-beta-2.x",
            "v1.0.0-0a",
        ] {
            let version: Version = tag.parse().unwrap_or_else(|e| panic!("{tag}: {e}"));
            assert_eq!(version.as_str(), tag);
            assert_eq!(version.to_string(), tag);
        }
    }

    #[test]
    fn only_tags_with_a_prerelease_part_are_prereleases() {
        let pre = |s: &str| s.parse::<Version>().map(|v| v.is_prerelease());
        assert_eq!(pre("v1.2.3-rc.1"), Ok(true));
        assert_eq!(pre("v1.2.3"), Ok(false));
    }

    #[test]
    fn malformed_versions_say_what_a_version_looks_like() {
        for (input, message) in [
            (
                "1.0",
                r#"malformed version "1.0" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "v1.0",
                r#"malformed version "v1.0" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "latest",
                r#"malformed version "latest" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "v1.02.0",
                r#"malformed version "v1.02.0" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "v1.0.0-",
                r#"malformed version "v1.0.0-" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "v1.0.0-rc..1",
                r#"malformed version "v1.0.0-rc..1" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "v1.0.0-rc_1",
                r#"malformed version "v1.0.0-rc_1" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "",
                r#"malformed version "" — versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
        ] {
            assert_eq!(
                input.parse::<Version>(),
                Err(message.to_string()),
                "for {input:?}"
            );
        }
    }

    #[test]
    fn a_version_without_its_v_suggests_the_tag() {
        assert_eq!(
            "1.0.0".parse::<Version>(),
            Err(r#"malformed version "1.0.0" — did you mean v1.0.0? versions are tags like v1.0.0 or v1.2.3-rc.1"#.to_string())
        );
        assert!("V1.2.3-rc.1"
            .parse::<Version>()
            .is_err_and(|e| e.contains("did you mean v1.2.3-rc.1?")));
    }

    #[test]
    fn build_metadata_is_refused_because_docker_tags_cannot_hold_it() {
        let err = "v1.0.0+build.5"
            .parse::<Version>()
            .err()
            .unwrap_or_default();
        assert!(err.contains("build metadata (+build.5)"), "{err}");
    }

    #[test]
    fn a_version_is_at_most_128_characters() {
        let longest = format!("v1.0.0-{}", "a".repeat(MAX_TAG_LEN - 7));
        assert_eq!(longest.len(), MAX_TAG_LEN);
        assert!(longest.parse::<Version>().is_ok());
        let too_long = format!("{longest}a");
        assert!(too_long
            .parse::<Version>()
            .is_err_and(|e| e.contains("at most 128 characters")));
    }

    #[test]
    fn names_are_lowercase_words() {
        for ok in ["production", "prod-eu_1", "0", &"a".repeat(63)] {
            assert!(EnvName::new(ok).is_ok(), "{ok}");
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Prod",
            "-prod",
            "_x",
            "prod env",
            "prød",
            &"a".repeat(64),
        ] {
            assert!(EnvName::new(bad).is_err(), "{bad}");
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            EnvName::new("Prod"),
            Err(r#"malformed environment name "Prod" — environment names are 1 to 63 lowercase letters, digits, - and _, starting with a letter or digit"#.to_string())
        );
    }

    #[test]
    fn deployment_ids_read_with_or_without_their_hash() {
        assert_eq!("#42".parse(), Ok(DeploymentId::new(42)));
        assert_eq!("42".parse(), Ok(DeploymentId::new(42)));
        assert_eq!(DeploymentId::new(42).to_string(), "#42");
        assert_eq!(DeploymentId::from(7).get(), 7);
    }

    #[test]
    fn malformed_deployment_ids_are_refused() {
        for (input, message) in [
            (
                "abc",
                r#"malformed deployment id "abc" — ids look like #42"#,
            ),
            ("#", r##"malformed deployment id "#" — ids look like #42"##),
            (
                "##4",
                r###"malformed deployment id "##4" — ids look like #42"###,
            ),
            ("-1", r#"malformed deployment id "-1" — ids look like #42"#),
            ("#0", "there is no deployment #0 — ids start at #1"),
            (
                "99999999999999999999999",
                r#"deployment id "99999999999999999999999" is too large"#,
            ),
        ] {
            assert_eq!(
                input.parse::<DeploymentId>(),
                Err(message.to_string()),
                "for {input:?}"
            );
        }
    }
}
