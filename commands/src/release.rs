//! `/release <version> [--ref <branch|sha>] [--dry-run]`: tag, build and push a release.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::newtypes::Version;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "release",
    summary: "Tag a release, build and push the service images, post the release notes",
    params: &[
        Param {
            name: "version",
            shape: Shape::Required,
            value: Value::Text("<version>"),
            about: "The tag to create, e.g. v1.0.0 or v1.2.3-rc.1",
        },
        Param {
            name: "ref",
            shape: Shape::Flag,
            value: Value::Text("<branch|sha>"),
            about: "What to release: a branch or a commit (default: the configured branch, main)",
        },
        Param {
            name: "dry-run",
            shape: Shape::Flag,
            value: Value::Switch,
            about: "Say what would be tagged and built, and the release notes; change nothing",
        },
    ],
    details: "Resolves the ref in the release repository, creates the annotated tag (you are its tagger), \
runs each service's build steps in a clean checkout of the tag, builds each image with the Docker Engine, \
and only when every build succeeded pushes every image and the tag. The progress message is edited in \
place; the release notes (the commits since the previous release, grouped by conventional-commit type) \
go in its thread. A version whose tag exists on another commit is refused.",
    examples: &["/release v1.0.0", "/release v1.0.1 --ref hotfix/login", "/release v1.1.0 --ref 3f2a9c1 --dry-run"],
};

/// A requested release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseArgs {
    pub version: Version,
    /// The branch or commit; `None` for the configured default.
    pub reference: Option<String>,
    pub dry_run: bool,
}

pub(crate) fn parse(_catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(version) = args.next_positional() else {
        return Err("missing <version>: which tag should be released? e.g. /release v1.0.0".into());
    };
    let version: Version = version.text().parse()?;
    let reference = args
        .value("ref")
        .map(|token| {
            let text = token.text();
            let valid = !text.is_empty()
                && !text.starts_with('-')
                && !text.contains("..")
                && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'));
            if valid {
                Ok(text.to_string())
            } else {
                Err(format!(
                    "--ref must be a branch name or a commit sha, got {}",
                    crate::text::echo(text)
                ))
            }
        })
        .transpose()?;
    let dry_run = args.switch("dry-run");
    Ok(Command::Release(ReleaseArgs { version, reference, dry_run }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, parse_ok, version};

    #[test]
    fn a_version_with_an_optional_ref_and_dry_run() {
        assert_eq!(
            parse_ok("/release v1.0.0"),
            Command::Release(ReleaseArgs { version: version("v1.0.0"), reference: None, dry_run: false })
        );
        assert_eq!(
            parse_ok("/release v1.2.3-rc.1 --ref release/1.2 --dry-run"),
            Command::Release(ReleaseArgs {
                version: version("v1.2.3-rc.1"),
                reference: Some("release/1.2".into()),
                dry_run: true
            })
        );
    }

    #[test]
    fn bad_releases_say_exactly_what_is_wrong() {
        for (line, message) in [
            ("/release", "missing <version>: which tag should be released? e.g. /release v1.0.0"),
            ("/release v1.0.0 --ref", "--ref needs a value: --ref <branch|sha>"),
            ("/release v1.0.0 --ref main;rm", "--ref must be a branch name or a commit sha, got \"main;rm\""),
            ("/release v1.0.0 --ref a..b", "--ref must be a branch name or a commit sha, got \"a..b\""),
            ("/release v1.0.0 staging", r#"unexpected extra argument "staging""#),
            ("/release v1.0.0 --hotfix x", "unknown flag --hotfix for /release (--hotfix is a flag of /deploy)"),
        ] {
            check_err(line, message, "/release <version> [--ref <branch|sha>] [--dry-run]");
        }
    }
}
