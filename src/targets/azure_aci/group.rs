//! A container group as ARM returns it (JSON): which container is the service's, the body of a PUT
//! that changes only its image, and the text a failed provisioning is explained with.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::secrets::Secret;
use crate::targets::docker::repository_of;

/// How many events per container a diagnosis shows.
const MAX_EVENTS: usize = 5;

fn containers(group: &Value) -> &[Value] {
    group.pointer("/properties/containers").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn name_of(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("?")
}

pub(super) fn image_of(container: &Value) -> Option<&str> {
    container.pointer("/properties/image").and_then(Value::as_str)
}

pub(super) fn provisioning_state(group: &Value) -> &str {
    group.pointer("/properties/provisioningState").and_then(Value::as_str).unwrap_or("Unknown")
}

/// The service's container: the configured name, else the one running `repository`, else the only one.
pub(super) fn container<'a>(group: &'a Value, configured: Option<&str>, repository: &str) -> Result<&'a Value, String> {
    let all = containers(group);
    let group_name = group.get("name").and_then(Value::as_str).unwrap_or("the container group");
    let names = || all.iter().map(name_of).collect::<Vec<_>>().join(", ");
    if let Some(name) = configured {
        return all
            .iter()
            .find(|c| name_of(c) == name)
            .ok_or_else(|| format!("container group {group_name} has no container named {name} (it has: {})", names()));
    }
    let matching: Vec<&Value> = all.iter().filter(|c| image_of(c).is_some_and(|i| repository_of(i) == repository)).collect();
    match (matching.as_slice(), all) {
        ([one], _) => Ok(one),
        ([], [only]) => Ok(only),
        ([], []) => Err(format!("container group {group_name} has no containers")),
        _ => Err(format!("cannot tell which container of group {group_name} is the service's ({}): name it in target.containers", names())),
    }
}

/// What ARM needs given again on every PUT because it never returns it.
pub(super) struct Supplied<'a> {
    /// Container name -> variable -> value.
    pub secure_environment: &'a BTreeMap<String, BTreeMap<String, Secret>>,
    /// Registry server -> password.
    pub registry_passwords: &'a BTreeMap<String, Secret>,
}

/// The body of a PUT that recreates `group` exactly, with container `name` running `image`: the
/// GET body less what ARM computes (state, instance views, the assigned IP and FQDN, identity
/// principals), with the secret values ARM withholds supplied again.
pub(super) fn put_body(group: &Value, name: &str, image: &str, supplied: &Supplied<'_>) -> Result<Value, String> {
    let mut body = group.clone();
    let Some(root) = body.as_object_mut() else {
        return Err("ARM returned a container group that is not a JSON object".into());
    };
    for key in ["id", "type", "etag", "systemData"] {
        root.remove(key);
    }
    if let Some(identity) = root.get_mut("identity").and_then(Value::as_object_mut) {
        identity.remove("principalId");
        identity.remove("tenantId");
        if let Some(users) = identity.get_mut("userAssignedIdentities").and_then(Value::as_object_mut) {
            for user in users.values_mut().filter_map(Value::as_object_mut) {
                user.remove("principalId");
                user.remove("clientId");
            }
        }
    }
    let properties = root.get_mut("properties").and_then(Value::as_object_mut).ok_or("the container group has no properties")?;
    properties.remove("provisioningState");
    properties.remove("instanceView");
    if let Some(ip) = properties.get_mut("ipAddress").and_then(Value::as_object_mut) {
        ip.remove("ip");
        ip.remove("fqdn");
    }
    let mut missing = Vec::new();
    if let Some(credentials) = properties.get_mut("imageRegistryCredentials").and_then(Value::as_array_mut) {
        for cred in credentials.iter_mut().filter_map(Value::as_object_mut) {
            let server = cred.get("server").and_then(Value::as_str).unwrap_or("?").to_string();
            let needs_password = cred.contains_key("username") && !cred.contains_key("identity") && !cred.contains_key("password");
            if needs_password {
                match supplied.registry_passwords.get(&server) {
                    Some(p) => {
                        cred.insert("password".into(), Value::String(p.expose().to_string()));
                    }
                    None => missing.push(format!("the password of registry {server} (target.registry_passwords)")),
                }
            }
        }
    }
    let mut found = false;
    for container in properties.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
        let container_name = name_of(container).to_string();
        let Some(props) = container.get_mut("properties").and_then(Value::as_object_mut) else { continue };
        props.remove("instanceView");
        if container_name == name {
            props.insert("image".into(), Value::String(image.to_string()));
            found = true;
        }
        for var in props.get_mut("environmentVariables").and_then(Value::as_array_mut).into_iter().flatten() {
            supply_secure_value(var, &container_name, supplied, &mut missing);
        }
    }
    if !found {
        return Err(format!("the container group has no container named {name}"));
    }
    if !missing.is_empty() {
        return Err(format!(
            "Azure does not return secret values, and a PUT without them would lose them; supply {}",
            missing.join(", ")
        ));
    }
    Ok(body)
}

/// A variable listed without a value is a secure one whose value ARM withheld.
fn supply_secure_value(var: &mut Value, container: &str, supplied: &Supplied<'_>, missing: &mut Vec<String>) {
    let Some(var) = var.as_object_mut() else { return };
    let has_value = |key: &str| var.get(key).is_some_and(|v| !v.is_null());
    if has_value("value") || has_value("secureValue") {
        return;
    }
    let name = var.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
    match supplied.secure_environment.get(container).and_then(|vars| vars.get(&name)) {
        Some(secret) => {
            var.remove("value");
            var.insert("secureValue".into(), Value::String(secret.expose().to_string()));
        }
        None => missing.push(format!("secure variable {name} of container {container} (target.secure_environment.{container}.{name})")),
    }
}

/// The group's and its containers' own account: state, exit code, restarts, latest events.
pub(super) fn diagnose(group: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Container group provisioning state: {}", provisioning_state(group));
    if let Some(state) = group.pointer("/properties/instanceView/state").and_then(Value::as_str) {
        let _ = writeln!(out, "Group state: {state}");
    }
    write_events(&mut out, "  ", group.pointer("/properties/instanceView/events"));
    for c in containers(group) {
        let _ = write!(out, "Container {} ({})", name_of(c), image_of(c).unwrap_or("?"));
        let view = c.pointer("/properties/instanceView");
        if let Some(current) = view.and_then(|v| v.get("currentState")) {
            let field = |k: &str| current.get(k).and_then(Value::as_str);
            let _ = write!(out, ": {}", field("state").unwrap_or("unknown"));
            if let Some(detail) = field("detailStatus").filter(|d| !d.is_empty()) {
                let _ = write!(out, " ({detail})");
            }
            if let Some(code) = current.get("exitCode").and_then(Value::as_i64) {
                let _ = write!(out, ", exit code {code}");
            }
        }
        if let Some(restarts) = view.and_then(|v| v.get("restartCount")).and_then(Value::as_i64).filter(|n| *n > 0) {
            let _ = write!(out, ", {restarts} restarts");
        }
        out.push('\n');
        write_events(&mut out, "  ", view.and_then(|v| v.get("events")));
    }
    out.trim_end().to_string()
}

fn write_events(out: &mut String, indent: &str, events: Option<&Value>) {
    let Some(events) = events.and_then(Value::as_array) else { return };
    for e in events.iter().rev().take(MAX_EVENTS).collect::<Vec<_>>().into_iter().rev() {
        let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        let at = [field("lastTimestamp"), field("firstTimestamp")].into_iter().find(|t| !t.is_empty()).unwrap_or("");
        let _ = write!(out, "{indent}- {at} {} {}: {}", field("type"), field("name"), field("message"));
        if let Some(count) = e.get("count").and_then(Value::as_i64).filter(|n| *n > 1) {
            let _ = write!(out, " (×{count})");
        }
        out.push('\n');
    }
}

/// The JSON object of an ARM error body (`{"error": {"code", "message"}}`) as `code: message`.
pub(super) fn arm_error(body: &str) -> String {
    let parsed: Option<Map<String, Value>> = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("error").cloned()).and_then(|e| match e {
        Value::Object(m) => Some(m),
        _ => None,
    });
    match parsed {
        Some(e) => format!(
            "{}: {}",
            e.get("code").and_then(Value::as_str).unwrap_or("error"),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ),
        None => body.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn azure_aci_a_put_drops_identity_principals_and_supplies_registry_passwords() {
        let group = json!({
            "name": "g", "location": "eastus",
            "identity": { "type": "UserAssigned", "principalId": "p", "tenantId": "t",
                "userAssignedIdentities": { "/id/u": { "principalId": "p2", "clientId": "c2" } } },
            "properties": {
                "provisioningState": "Succeeded",
                "imageRegistryCredentials": [{ "server": "registry.example.com", "username": "deploy" }],
                "containers": [{ "name": "app", "properties": { "image": "registry.example.com/app:v1" } }]
            }
        });
        let passwords = BTreeMap::from([("registry.example.com".to_string(), Secret::from_value("registry-password".into()))]);
        let env = BTreeMap::new();
        let supplied = Supplied { secure_environment: &env, registry_passwords: &passwords };

        let body = put_body(&group, "app", "registry.example.com/app:v2", &supplied).unwrap();

        assert_eq!(body["identity"], json!({ "type": "UserAssigned", "userAssignedIdentities": { "/id/u": {} } }));
        assert_eq!(body["properties"]["imageRegistryCredentials"][0]["password"], "registry-password");
        assert_eq!(body["properties"]["containers"][0]["properties"]["image"], "registry.example.com/app:v2");
        assert!(body["properties"].get("provisioningState").is_none());

        let none = BTreeMap::new();
        let err = put_body(&group, "app", "x:v2", &Supplied { secure_environment: &env, registry_passwords: &none }).unwrap_err();
        assert!(err.contains("the password of registry registry.example.com (target.registry_passwords)"), "{err}");
    }
}
