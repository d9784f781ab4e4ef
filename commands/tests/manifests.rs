//! The checked-in Slack manifest and Discord registration are what the command definitions
//! generate. `DEPLOYBOT_UPDATE_MANIFESTS=1` rewrites them instead of comparing.

use std::fs;
use std::path::PathBuf;

use deploybot_commands::manifest::generated_files;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

#[test]
fn the_checked_in_manifests_match_the_command_definitions() {
    let update = std::env::var("DEPLOYBOT_UPDATE_MANIFESTS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, generated) in generated_files() {
        let path = manifests_dir().join(name);
        if update {
            fs::create_dir_all(manifests_dir()).expect("create commands/manifests");
            fs::write(&path, &generated)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            continue;
        }
        match fs::read_to_string(&path) {
            Ok(checked_in) if checked_in == generated => {}
            Ok(_) => stale.push(format!(
                "{} differs from the generated text",
                path.display()
            )),
            Err(e) => stale.push(format!("{} cannot be read: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nRun `deploybot commands export` (or DEPLOYBOT_UPDATE_MANIFESTS=1 cargo test -p deploybot-commands --test manifests) and commit the result",
        stale.join("\n")
    );
}
