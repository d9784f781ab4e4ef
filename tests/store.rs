//! The store's contract, on SQLite and on PostgreSQL: every test runs against a fresh database
//! of each kind (see `support::db`). Times are Unix milliseconds chosen by the test.

mod support;

use std::sync::Arc;

use deploybot::model::*;
use deploybot::store::{render_history_markdown, AlertRecord, BackupRecord, OutboxMessage, Patch, Schedule, Stats, StatsInput, Store};
use support::db::{postgres, request, stores, TestDb, DAY, HOUR, MINUTE, TUE_1_DEC_2026_10AM_NY as T0};
use tokio::sync::Barrier;

const NY: chrono_tz::Tz = chrono_tz::America::New_York;

async fn create(db: &TestDb, env: &str, version: &str, state: DeploymentState, now: Millis) -> Deployment {
    db.create_deployment(&request(env, version, state), now).await.unwrap_or_else(|e| panic!("{}: create_deployment: {e:#}", db.name))
}

async fn get(db: &TestDb, id: i64) -> Deployment {
    db.deployment(id).await.unwrap_or_else(|e| panic!("{}: deployment({id}): {e:#}", db.name)).unwrap_or_else(|| panic!("{}: deployment {id} is missing", db.name))
}

/// Moves a deployment to `to` from whatever state it is in.
async fn force(db: &TestDb, id: i64, to: DeploymentState, patch: Patch, now: Millis) {
    let moved = db.transition(id, &DeploymentState::ALL, to, &patch, "deploybot", now).await.unwrap();
    assert!(moved, "{}: #{id} could not be moved to {to}", db.name);
}

/// A deployment that ran from `started` to `finished` and ended in `state`.
async fn ran(db: &TestDb, env: &str, version: &str, by: &str, started: Millis, finished: Millis, state: DeploymentState) -> Deployment {
    let mut req = request(env, version, DeploymentState::Queued);
    req.requested_by_name = by.to_string();
    req.requested_by = format!("U0{}", by.to_uppercase().replace(' ', ""));
    let d = db.create_deployment(&req, started - MINUTE).await.unwrap();
    let failed_at = matches!(state, DeploymentState::Failed | DeploymentState::RolledBack | DeploymentState::RollbackFailed).then_some(started + (finished - started) / 2);
    force(db, d.id, state, Patch { started_at: Some(started), finished_at: Some(finished), failed_at, release_lease: true, ..Patch::default() }, finished).await;
    get(db, d.id).await
}

fn actions(log: &[(Millis, String, String)]) -> Vec<&str> {
    log.iter().map(|(_, _, a)| a.as_str()).collect()
}

// ------------------------------------------------------------------------------------ deployments

#[tokio::test]
async fn a_created_deployment_reads_back_with_every_field_it_was_given() {
    for db in stores().await {
        let mut req = request("production", "v1.2.3-rc.1", DeploymentState::AwaitingApproval);
        req.services = vec!["backend".into()];
        req.hotfix_reason = Some("fix invoice totals".into());
        req.scheduled_for = Some(T0 + HOUR);
        req.with_db = true;
        req.approvals_required = 2;
        req.approval_expires_at = Some(T0 + 30 * MINUTE);
        let created = db.create_deployment(&req, T0).await.unwrap();
        assert!(created.id > 0, "{}", db.name);
        let read = get(&db, created.id).await;
        assert_eq!(read, created, "{}: what create returns is what is stored", db.name);
        assert_eq!(read.env, "production", "{}", db.name);
        assert_eq!(read.kind, DeploymentKind::Deploy, "{}", db.name);
        assert_eq!(read.version, "v1.2.3-rc.1", "{}", db.name);
        assert_eq!(read.services, vec!["backend".to_string()], "{}", db.name);
        assert_eq!(read.state, DeploymentState::AwaitingApproval, "{}", db.name);
        assert_eq!((read.requested_by.as_str(), read.requested_by_name.as_str(), read.channel.as_str()), ("U0ALICE", "Alice", "C0PRODUCTION"), "{}", db.name);
        assert_eq!(read.hotfix_reason.as_deref(), Some("fix invoice totals"), "{}", db.name);
        assert_eq!(read.scheduled_for, Some(T0 + HOUR), "{}", db.name);
        assert!(read.with_db, "{}", db.name);
        assert_eq!(read.approvals_required, 2, "{}", db.name);
        assert_eq!(read.approval_expires_at, Some(T0 + 30 * MINUTE), "{}", db.name);
        assert_eq!((read.created_at, read.updated_at, read.rev), (T0, T0, 0), "{}", db.name);
        assert_eq!((read.started_at, read.finished_at, read.failed_at, read.lease_owner.as_deref()), (None, None, None, None), "{}", db.name);
        assert_eq!(db.audit_log(created.id).await.unwrap(), vec![(T0, "U0ALICE".to_string(), "created:awaiting_approval".to_string())], "{}", db.name);
        assert_eq!(db.deployment(created.id + 1000).await.unwrap(), None, "{}: an unknown id is None", db.name);
    }
}

#[tokio::test]
async fn a_transition_moves_only_from_the_listed_states_and_writes_an_audit_row() {
    for db in stores().await {
        let d = create(&db, "production", "v1.0.0", DeploymentState::Requested, T0).await;

        let moved = db.transition(d.id, &[DeploymentState::Queued, DeploymentState::Approved], DeploymentState::Running, &Patch::default(), "deploybot", T0 + 1).await.unwrap();
        assert!(!moved, "{}: requested is not in [queued, approved]", db.name);
        let unchanged = get(&db, d.id).await;
        assert_eq!((unchanged.state, unchanged.rev, unchanged.updated_at), (DeploymentState::Requested, 0, T0), "{}", db.name);
        assert_eq!(actions(&db.audit_log(d.id).await.unwrap()), ["created:requested"], "{}: a refused transition is not audited", db.name);

        let moved = db.transition(d.id, &[DeploymentState::Requested], DeploymentState::AwaitingApproval, &Patch::default(), "deploybot", T0 + 2).await.unwrap();
        assert!(moved, "{}", db.name);
        let again = db.transition(d.id, &[DeploymentState::Requested], DeploymentState::Denied, &Patch::default(), "deploybot", T0 + 3).await.unwrap();
        assert!(!again, "{}: someone else moved it first", db.name);
        let after = get(&db, d.id).await;
        assert_eq!((after.state, after.rev, after.updated_at), (DeploymentState::AwaitingApproval, 1, T0 + 2), "{}", db.name);

        assert!(db.transition(d.id, &[DeploymentState::AwaitingApproval], DeploymentState::Approved, &Patch::default(), "U0CAROL", T0 + 4).await.unwrap());
        let log = db.audit_log(d.id).await.unwrap();
        assert_eq!(
            log,
            vec![
                (T0, "U0ALICE".to_string(), "created:requested".to_string()),
                (T0 + 2, "deploybot".to_string(), "state:awaiting_approval".to_string()),
                (T0 + 4, "U0CAROL".to_string(), "state:approved".to_string()),
            ],
            "{}",
            db.name
        );
    }
}

#[tokio::test]
async fn a_transition_sets_exactly_the_patched_fields() {
    for db in stores().await {
        let d = create(&db, "staging", "v1.0.0", DeploymentState::Queued, T0).await;
        db.claim_job("replica-a", T0, MINUTE).await.unwrap().expect("the queued job");

        let running = Patch { started_at: Some(T0 + 10), current_step: Some("preflight".into()), ..Patch::default() };
        assert!(db.transition(d.id, &[DeploymentState::Queued], DeploymentState::Running, &running, "deploybot", T0 + 10).await.unwrap());
        let r = get(&db, d.id).await;
        assert_eq!((r.started_at, r.current_step.as_deref(), r.failed_at, r.error.as_deref()), (Some(T0 + 10), Some("preflight"), None, None), "{}", db.name);
        assert_eq!(r.lease_owner.as_deref(), Some("replica-a"), "{}: the lease stays unless released", db.name);

        // Only later fields set: each must land in its own column.
        let failed = Patch {
            failed_at: Some(T0 + 20),
            finished_at: Some(T0 + 30),
            issues: Some("backend never became healthy".into()),
            error: Some("health check failed: 503".into()),
            release_lease: true,
            ..Patch::default()
        };
        assert!(db.transition(d.id, &[DeploymentState::Running], DeploymentState::Failed, &failed, "deploybot", T0 + 30).await.unwrap());
        let f = get(&db, d.id).await;
        assert_eq!(f.state, DeploymentState::Failed, "{}", db.name);
        assert_eq!((f.started_at, f.failed_at, f.finished_at), (Some(T0 + 10), Some(T0 + 20), Some(T0 + 30)), "{}", db.name);
        assert_eq!(f.current_step.as_deref(), Some("preflight"), "{}: not patched, not changed", db.name);
        assert_eq!(f.issues.as_deref(), Some("backend never became healthy"), "{}", db.name);
        assert_eq!(f.error.as_deref(), Some("health check failed: 503"), "{}", db.name);
        assert_eq!((f.lease_owner, f.lease_until), (None, None), "{}: the lease is released", db.name);

        let s = create(&db, "staging", "v1.0.1", DeploymentState::AwaitingApproval, T0).await;
        let patch = Patch { scheduled_for: Some(T0 + DAY), approval_expires_at: Some(T0 + 5 * MINUTE), ..Patch::default() };
        assert!(db.transition(s.id, &[DeploymentState::AwaitingApproval], DeploymentState::Scheduled, &patch, "deploybot", T0 + 1).await.unwrap());
        let s = get(&db, s.id).await;
        assert_eq!((s.scheduled_for, s.approval_expires_at, s.started_at), (Some(T0 + DAY), Some(T0 + 5 * MINUTE), None), "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_concurrent_transitions_from_the_same_state_exactly_one_wins() {
    for db in stores().await {
        let d = create(&db, "staging", "v1.0.0", DeploymentState::AwaitingApproval, T0).await;
        let barrier = Arc::new(Barrier::new(6));
        let mut tasks = Vec::new();
        for (i, to) in [DeploymentState::Approved, DeploymentState::Rejected, DeploymentState::Expired, DeploymentState::Cancelled, DeploymentState::Approved, DeploymentState::Rejected]
            .into_iter()
            .enumerate()
        {
            let (store, barrier) = (db.store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.transition(d.id, &[DeploymentState::AwaitingApproval], to, &Patch::default(), &format!("actor-{i}"), T0 + 1).await.unwrap().then_some(to)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            winners.extend(t.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "{}: winners {winners:?}", db.name);
        assert_eq!(get(&db, d.id).await.state, winners[0], "{}", db.name);
        assert_eq!(db.audit_log(d.id).await.unwrap().len(), 2, "{}: one creation, one state change", db.name);
    }
}

#[tokio::test]
async fn deployments_are_listed_newest_first_and_filtered_by_environment_and_state() {
    for db in stores().await {
        let a = create(&db, "staging", "v1.0.0", DeploymentState::Succeeded, T0).await;
        let b = create(&db, "production", "v1.0.0", DeploymentState::AwaitingApproval, T0 + 1).await;
        let c = create(&db, "staging", "v1.1.0", DeploymentState::Running, T0 + 2).await;
        let d = create(&db, "staging", "v1.2.0", DeploymentState::Scheduled, T0 + 3).await;
        let ids = |v: Vec<Deployment>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(ids(db.deployments(None, &[], 10).await.unwrap()), [d.id, c.id, b.id, a.id], "{}", db.name);
        assert_eq!(ids(db.deployments(Some("staging"), &[], 10).await.unwrap()), [d.id, c.id, a.id], "{}", db.name);
        assert_eq!(ids(db.deployments(Some("staging"), &[], 2).await.unwrap()), [d.id, c.id], "{}: the limit holds", db.name);
        assert_eq!(ids(db.deployments(Some("staging"), &[DeploymentState::Succeeded, DeploymentState::Scheduled], 10).await.unwrap()), [d.id, a.id], "{}", db.name);
        assert_eq!(ids(db.deployments(None, &[DeploymentState::AwaitingApproval], 10).await.unwrap()), [b.id], "{}", db.name);
        assert_eq!(ids(db.in_flight("staging").await.unwrap()), [c.id], "{}: running is in flight; succeeded and scheduled are not", db.name);
        assert_eq!(ids(db.in_flight("production").await.unwrap()), [b.id], "{}", db.name);
        assert!(db.in_flight("development").await.unwrap().is_empty(), "{}", db.name);
    }
}

#[tokio::test]
async fn a_request_past_its_approval_deadline_is_found_as_expired() {
    for db in stores().await {
        let mut req = request("production", "v1.0.0", DeploymentState::AwaitingApproval);
        req.approval_expires_at = Some(T0 + 30 * MINUTE);
        let waiting = db.create_deployment(&req, T0).await.unwrap();
        let mut approved = req.clone();
        approved.state = DeploymentState::Approved;
        db.create_deployment(&approved, T0).await.unwrap();
        assert!(db.expired_approvals(T0 + 30 * MINUTE - 1).await.unwrap().is_empty(), "{}: not yet", db.name);
        let expired: Vec<i64> = db.expired_approvals(T0 + 30 * MINUTE).await.unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(expired, [waiting.id], "{}: at the deadline, and only requests still waiting", db.name);
    }
}

#[tokio::test]
async fn a_cancel_request_is_recorded_once_and_issues_accumulate() {
    for db in stores().await {
        let d = create(&db, "staging", "v1.0.0", DeploymentState::Running, T0).await;
        assert!(db.request_cancel(d.id, "U0BOB", T0 + 1).await.unwrap(), "{}", db.name);
        assert!(!db.request_cancel(d.id, "U0CAROL", T0 + 2).await.unwrap(), "{}: already requested", db.name);
        assert_eq!(get(&db, d.id).await.cancel_requested_by.as_deref(), Some("U0BOB"), "{}", db.name);

        db.add_issue(d.id, "migration took 9 minutes", T0 + 3).await.unwrap();
        db.add_issue(d.id, "frontend restarted twice", T0 + 4).await.unwrap();
        let d = get(&db, d.id).await;
        assert_eq!(d.issues.as_deref(), Some("migration took 9 minutes; frontend restarted twice"), "{}", db.name);
        assert_eq!(d.updated_at, T0 + 4, "{}", db.name);

        db.set_current_step(d.id, Some("deploy"), T0 + 5).await.unwrap();
        assert_eq!(get(&db, d.id).await.current_step.as_deref(), Some("deploy"), "{}", db.name);
        db.set_current_step(d.id, None, T0 + 6).await.unwrap();
        assert_eq!(get(&db, d.id).await.current_step, None, "{}", db.name);
    }
}

#[tokio::test]
async fn a_version_has_succeeded_on_an_environment_only_after_a_successful_deploy_there() {
    for db in stores().await {
        create(&db, "staging", "v1.0.0", DeploymentState::Failed, T0).await;
        assert!(!db.version_succeeded_on("staging", "v1.0.0").await.unwrap(), "{}: a failed deploy does not count", db.name);
        let mut rollback = request("staging", "v1.0.0", DeploymentState::Succeeded);
        rollback.kind = DeploymentKind::Rollback;
        db.create_deployment(&rollback, T0).await.unwrap();
        assert!(!db.version_succeeded_on("staging", "v1.0.0").await.unwrap(), "{}: a rollback to it does not count", db.name);
        create(&db, "development", "v1.0.0", DeploymentState::Succeeded, T0).await;
        assert!(!db.version_succeeded_on("staging", "v1.0.0").await.unwrap(), "{}: another environment does not count", db.name);
        create(&db, "staging", "v1.0.0", DeploymentState::Succeeded, T0).await;
        assert!(db.version_succeeded_on("staging", "v1.0.0").await.unwrap(), "{}", db.name);
        assert!(!db.version_succeeded_on("staging", "v1.0.1").await.unwrap(), "{}", db.name);
    }
}

// ------------------------------------------------------------------------------------ steps

#[tokio::test]
async fn a_step_started_twice_gets_attempt_two() {
    for db in stores().await {
        let d = create(&db, "staging", "v1.0.0", DeploymentState::Running, T0).await;
        let first = db.start_step(d.id, 3, "verify", T0 + 1).await.unwrap();
        assert_eq!((first.attempt, first.seq, first.state, first.started_at, first.finished_at), (1, 3, StepState::Running, T0 + 1, None), "{}", db.name);
        assert_eq!(get(&db, d.id).await.current_step.as_deref(), Some("verify"), "{}: the deployment shows its current step", db.name);
        db.finish_step(first.id, StepState::Failed, Some("GET /api/actuator/health returned 503"), T0 + 2).await.unwrap();

        let second = db.start_step(d.id, 3, "verify", T0 + 3).await.unwrap();
        assert_eq!(second.attempt, 2, "{}", db.name);
        assert_ne!(second.id, first.id, "{}", db.name);
        db.finish_step(second.id, StepState::Succeeded, None, T0 + 4).await.unwrap();

        let other = db.start_step(d.id, 4, "monitor", T0 + 5).await.unwrap();
        assert_eq!(other.attempt, 1, "{}: attempts count per step name", db.name);
        db.skip_step(d.id, 5, "backup", "disabled for staging", T0 + 6).await.unwrap();

        let another = create(&db, "staging", "v1.0.1", DeploymentState::Running, T0).await;
        assert_eq!(db.start_step(another.id, 3, "verify", T0 + 7).await.unwrap().attempt, 1, "{}: attempts count per deployment", db.name);

        let steps = db.steps(d.id).await.unwrap();
        #[allow(clippy::type_complexity)]
        let summary: Vec<(&str, i64, StepState, Option<&str>, Option<Millis>)> =
            steps.iter().map(|s| (s.name.as_str(), s.attempt, s.state, s.detail.as_deref(), s.finished_at)).collect();
        assert_eq!(
            summary,
            vec![
                ("verify", 1, StepState::Failed, Some("GET /api/actuator/health returned 503"), Some(T0 + 2)),
                ("verify", 2, StepState::Succeeded, None, Some(T0 + 4)),
                ("monitor", 1, StepState::Running, None, None),
                ("backup", 1, StepState::Skipped, Some("disabled for staging"), Some(T0 + 6)),
            ],
            "{}",
            db.name
        );
    }
}

// ------------------------------------------------------------------------------------ services

#[tokio::test]
async fn a_deployment_service_is_upserted_per_service() {
    for db in stores().await {
        let d = create(&db, "production", "v1.1.0", DeploymentState::Running, T0).await;
        let mut frontend = DeploymentService {
            deployment_id: d.id,
            service: "frontend".into(),
            from_version: Some("v1.0.0".into()),
            from_ref: Some("arn:aws:ecs:us-east-1:1:task-definition/fe:7".into()),
            to_version: "v1.1.0".into(),
            to_ref: None,
            state: "pending".into(),
        };
        let backend = DeploymentService { service: "backend".into(), from_ref: Some("arn:aws:ecs:us-east-1:1:task-definition/be:4".into()), ..frontend.clone() };
        db.put_deployment_service(&frontend, T0).await.unwrap();
        db.put_deployment_service(&backend, T0).await.unwrap();
        frontend.to_ref = Some("arn:aws:ecs:us-east-1:1:task-definition/fe:8".into());
        frontend.state = "deployed".into();
        db.put_deployment_service(&frontend, T0 + 1).await.unwrap();
        assert_eq!(db.deployment_services(d.id).await.unwrap(), vec![backend, frontend], "{}: one row per service, ordered by name", db.name);
        assert!(db.deployment_services(d.id + 1).await.unwrap().is_empty(), "{}", db.name);
    }
}

#[tokio::test]
async fn the_recorded_reference_of_a_version_is_the_latest_from_a_succeeded_deployment_of_that_environment() {
    for db in stores().await {
        let service = |d: i64, version: &str, to_ref: Option<&str>| DeploymentService {
            deployment_id: d,
            service: "backend".into(),
            from_version: None,
            from_ref: None,
            to_version: version.into(),
            to_ref: to_ref.map(str::to_string),
            state: "deployed".into(),
        };
        let first = create(&db, "production", "v1.0.0", DeploymentState::Succeeded, T0).await;
        db.put_deployment_service(&service(first.id, "v1.0.0", Some("td/be:2")), T0).await.unwrap();
        let again = create(&db, "production", "v1.0.0", DeploymentState::Succeeded, T0 + 10).await;
        db.put_deployment_service(&service(again.id, "v1.0.0", Some("td/be:5")), T0 + 10).await.unwrap();
        let failed = create(&db, "production", "v1.0.0", DeploymentState::Failed, T0 + 20).await;
        db.put_deployment_service(&service(failed.id, "v1.0.0", Some("td/be:6")), T0 + 20).await.unwrap();
        let unrecorded = create(&db, "production", "v1.0.0", DeploymentState::Succeeded, T0 + 30).await;
        db.put_deployment_service(&service(unrecorded.id, "v1.0.0", None), T0 + 30).await.unwrap();
        let staging = create(&db, "staging", "v1.0.0", DeploymentState::Succeeded, T0 + 40).await;
        db.put_deployment_service(&service(staging.id, "v1.0.0", Some("td/be-staging:1")), T0 + 40).await.unwrap();

        let found = db.recorded_ref("production", "backend", "v1.0.0").await.unwrap();
        assert_eq!(found.as_deref(), Some("td/be:5"), "{}: the latest succeeded one with a reference, not the failed one", db.name);
        assert_eq!(db.recorded_ref("production", "frontend", "v1.0.0").await.unwrap(), None, "{}", db.name);
        assert_eq!(db.recorded_ref("production", "backend", "v0.9.0").await.unwrap(), None, "{}", db.name);
        assert_eq!(db.recorded_ref("staging", "backend", "v1.0.0").await.unwrap().as_deref(), Some("td/be-staging:1"), "{}", db.name);
    }
}

#[tokio::test]
async fn service_versions_keep_the_latest_version_per_environment_and_service() {
    for db in stores().await {
        let d1 = create(&db, "production", "v1.0.0", DeploymentState::Succeeded, T0).await;
        let d2 = create(&db, "production", "v1.1.0", DeploymentState::Succeeded, T0).await;
        let sv = |env: &str, service: &str, version: &str, dep: i64, at: Millis| ServiceVersion {
            env: env.into(),
            service: service.into(),
            version: version.into(),
            reference: Some(format!("{service}:{version}")),
            deployment_id: Some(dep),
            updated_at: at,
        };
        db.set_service_version(&sv("production", "frontend", "v1.0.0", d1.id, T0)).await.unwrap();
        db.set_service_version(&sv("production", "backend", "v1.0.0", d1.id, T0)).await.unwrap();
        db.set_service_version(&sv("staging", "backend", "v1.2.0", d1.id, T0)).await.unwrap();
        db.set_service_version(&sv("production", "backend", "v1.1.0", d2.id, T0 + 1)).await.unwrap();
        assert_eq!(
            db.service_versions("production").await.unwrap(),
            vec![sv("production", "backend", "v1.1.0", d2.id, T0 + 1), sv("production", "frontend", "v1.0.0", d1.id, T0)],
            "{}",
            db.name
        );
        assert_eq!(db.service_versions("staging").await.unwrap(), vec![sv("staging", "backend", "v1.2.0", d1.id, T0)], "{}", db.name);
        assert!(db.service_versions("development").await.unwrap().is_empty(), "{}", db.name);
    }
}

#[tokio::test]
async fn the_latest_backup_of_a_deployment_is_found_for_a_database_rollback() {
    for db in stores().await {
        let d = create(&db, "production", "v1.1.0", DeploymentState::Running, T0).await;
        assert_eq!(db.backup_for(d.id).await.unwrap(), None, "{}", db.name);
        let first = BackupRecord {
            deployment_id: d.id,
            env: "production".into(),
            local_path: Some("backups/backup_20261201_100000.sql".into()),
            remote_uri: None,
            size_bytes: 1024,
            created_at: T0,
        };
        let second = BackupRecord { remote_uri: Some("s3://backups/invoiceme/backup_20261201_100500.sql".into()), size_bytes: 2048, created_at: T0 + 5 * MINUTE, ..first.clone() };
        let a = db.record_backup(&first).await.unwrap();
        let b = db.record_backup(&second).await.unwrap();
        assert_ne!(a, b, "{}", db.name);
        assert_eq!(db.backup_for(d.id).await.unwrap(), Some(second), "{}", db.name);
    }
}

// ------------------------------------------------------------------------------------ votes

fn vote(deployment_id: i64, user: &str, kind: VoteKind, at: Millis) -> Vote {
    Vote { deployment_id, user_id: format!("U0{}", user.to_uppercase()), user_name: user.into(), vote: kind, created_at: at }
}

#[tokio::test]
async fn a_duplicate_vote_is_counted_once() {
    for db in stores().await {
        let d = create(&db, "production", "v1.0.0", DeploymentState::AwaitingApproval, T0).await;
        assert!(db.add_vote(&vote(d.id, "carol", VoteKind::Approve, T0 + 1)).await.unwrap(), "{}", db.name);
        assert!(!db.add_vote(&vote(d.id, "carol", VoteKind::Approve, T0 + 2)).await.unwrap(), "{}: the same reaction again", db.name);
        assert!(db.add_vote(&vote(d.id, "dan", VoteKind::Approve, T0 + 3)).await.unwrap(), "{}", db.name);
        assert!(db.add_vote(&vote(d.id, "carol", VoteKind::Reject, T0 + 4)).await.unwrap(), "{}: a reject is a different vote", db.name);
        let votes = db.votes(d.id).await.unwrap();
        assert_eq!(
            votes,
            vec![vote(d.id, "carol", VoteKind::Approve, T0 + 1), vote(d.id, "dan", VoteKind::Approve, T0 + 3), vote(d.id, "carol", VoteKind::Reject, T0 + 4)],
            "{}",
            db.name
        );
        let other = create(&db, "production", "v1.0.1", DeploymentState::AwaitingApproval, T0).await;
        assert!(db.votes(other.id).await.unwrap().is_empty(), "{}: votes belong to their deployment", db.name);
    }
}

#[tokio::test]
async fn a_withdrawn_vote_no_longer_counts_and_can_be_cast_again() {
    for db in stores().await {
        let d = create(&db, "production", "v1.0.0", DeploymentState::AwaitingApproval, T0).await;
        db.add_vote(&vote(d.id, "carol", VoteKind::Approve, T0 + 1)).await.unwrap();
        db.add_vote(&vote(d.id, "dan", VoteKind::Approve, T0 + 2)).await.unwrap();
        assert!(db.withdraw_vote(d.id, "U0CAROL", VoteKind::Approve, T0 + 3).await.unwrap(), "{}", db.name);
        assert!(!db.withdraw_vote(d.id, "U0CAROL", VoteKind::Approve, T0 + 4).await.unwrap(), "{}: already withdrawn", db.name);
        assert!(!db.withdraw_vote(d.id, "U0DAN", VoteKind::Reject, T0 + 4).await.unwrap(), "{}: dan never rejected", db.name);
        assert_eq!(db.votes(d.id).await.unwrap(), vec![vote(d.id, "dan", VoteKind::Approve, T0 + 2)], "{}", db.name);

        assert!(db.add_vote(&vote(d.id, "carol", VoteKind::Approve, T0 + 5)).await.unwrap(), "{}: re-adding a withdrawn vote counts", db.name);
        assert!(!db.add_vote(&vote(d.id, "carol", VoteKind::Approve, T0 + 6)).await.unwrap(), "{}: and only once", db.name);
        assert_eq!(
            db.votes(d.id).await.unwrap(),
            vec![vote(d.id, "dan", VoteKind::Approve, T0 + 2), vote(d.id, "carol", VoteKind::Approve, T0 + 5)],
            "{}: the re-added vote is as of its new time",
            db.name
        );
    }
}

// ------------------------------------------------------------------------------------ locks

fn manual_lock(env: &str, holder: &str, at: Millis) -> Lock {
    Lock { env: env.into(), kind: LockKind::Manual, holder: holder.into(), reason: "investigating an incident".into(), deployment_id: None, created_at: at }
}

fn deployment_lock(env: &str, deployment_id: i64, at: Millis) -> Lock {
    Lock { env: env.into(), kind: LockKind::Deployment, holder: "deploybot".into(), reason: format!("deployment #{deployment_id}"), deployment_id: Some(deployment_id), created_at: at }
}

#[tokio::test]
async fn a_second_lock_on_an_environment_returns_who_holds_it() {
    for db in stores().await {
        let d = create(&db, "production", "v1.0.0", DeploymentState::Running, T0).await;
        let first = manual_lock("production", "U0BOB", T0);
        assert_eq!(db.try_lock(&first).await.unwrap(), Ok(()), "{}", db.name);
        assert_eq!(db.try_lock(&deployment_lock("production", d.id, T0 + 1)).await.unwrap(), Err(first.clone()), "{}", db.name);
        assert_eq!(db.try_lock(&manual_lock("production", "U0CAROL", T0 + 2)).await.unwrap(), Err(first.clone()), "{}", db.name);
        assert_eq!(db.try_lock(&deployment_lock("staging", d.id, T0 + 3)).await.unwrap(), Ok(()), "{}: locks are per environment", db.name);
        assert_eq!(db.lock("production").await.unwrap(), Some(first.clone()), "{}", db.name);
        assert_eq!(db.locks().await.unwrap(), vec![first, deployment_lock("staging", d.id, T0 + 3)], "{}", db.name);
        assert_eq!(db.lock("development").await.unwrap(), None, "{}", db.name);
    }
}

#[tokio::test]
async fn a_deployment_lock_is_released_only_by_its_own_deployment() {
    for db in stores().await {
        let mine = create(&db, "production", "v1.0.0", DeploymentState::Running, T0).await;
        let other = create(&db, "production", "v1.0.1", DeploymentState::Queued, T0).await;
        db.try_lock(&deployment_lock("production", mine.id, T0)).await.unwrap().expect("free");
        assert!(!db.release_deployment_lock("production", other.id, T0 + 1).await.unwrap(), "{}", db.name);
        assert!(db.lock("production").await.unwrap().is_some(), "{}: still held", db.name);
        let manual = db.release_manual_lock("production", "U0BOB", T0 + 2).await.unwrap();
        assert_eq!(manual.map(|l| l.kind), Some(LockKind::Deployment), "{}: /unlock reports the deployment's lock", db.name);
        assert!(db.lock("production").await.unwrap().is_some(), "{}: /unlock does not release a deployment's lock", db.name);
        assert!(db.release_deployment_lock("production", mine.id, T0 + 3).await.unwrap(), "{}", db.name);
        assert_eq!(db.lock("production").await.unwrap(), None, "{}", db.name);
        assert!(!db.release_deployment_lock("production", mine.id, T0 + 4).await.unwrap(), "{}: nothing left to release", db.name);
        assert_eq!(actions(&db.audit_log(mine.id).await.unwrap()), ["created:running", "lock:deployment", "unlock:deployment"], "{}", db.name);
    }
}

#[tokio::test]
async fn a_manual_lock_is_released_by_unlock_and_then_the_environment_is_free() {
    for db in stores().await {
        let lock = manual_lock("staging", "U0BOB", T0);
        db.try_lock(&lock).await.unwrap().expect("free");
        let d = create(&db, "staging", "v1.0.0", DeploymentState::Queued, T0).await;
        assert!(!db.release_deployment_lock("staging", d.id, T0 + 1).await.unwrap(), "{}: a deployment cannot release a manual lock", db.name);
        assert_eq!(db.release_manual_lock("staging", "U0CAROL", T0 + 2).await.unwrap(), Some(lock), "{}", db.name);
        assert_eq!(db.lock("staging").await.unwrap(), None, "{}", db.name);
        assert_eq!(db.release_manual_lock("staging", "U0CAROL", T0 + 3).await.unwrap(), None, "{}: nothing to release", db.name);
        assert_eq!(db.try_lock(&deployment_lock("staging", d.id, T0 + 4)).await.unwrap(), Ok(()), "{}", db.name);
    }
}

// ------------------------------------------------------------------------------------ chat events

#[tokio::test]
async fn a_chat_event_is_new_only_the_first_time_it_is_seen() {
    for db in stores().await {
        assert!(db.mark_event("Ev0123ABC", "slack", T0).await.unwrap(), "{}", db.name);
        assert!(!db.mark_event("Ev0123ABC", "slack", T0 + 1).await.unwrap(), "{}: a redelivery", db.name);
        assert!(!db.mark_event("Ev0123ABC", "slack", T0 + DAY).await.unwrap(), "{}: a day later", db.name);
        assert!(db.mark_event("Ev0123ABD", "slack", T0 + 2).await.unwrap(), "{}: another event", db.name);
    }
}

// ------------------------------------------------------------------------------------ outbox

fn message(key: &str, body: &str) -> OutboxMessage {
    OutboxMessage {
        key: key.into(),
        channel: "C0PROD".into(),
        thread_key: None,
        deployment_id: None,
        alert_id: None,
        purpose: "progress".into(),
        body: body.into(),
        recipient: None,
    }
}

#[tokio::test]
async fn the_outbox_keeps_one_message_per_key_and_tracks_posting() {
    for db in stores().await {
        let d = create(&db, "production", "v1.0.0", DeploymentState::Running, T0).await;
        let progress = OutboxMessage { deployment_id: Some(d.id), ..message(&format!("deployment:{}:progress", d.id), "{\"text\":\"🚀 #1 running\"}") };
        let (id, new) = db.outbox_put(&progress, T0).await.unwrap();
        assert!(new, "{}", db.name);
        let (again, new_again) = db.outbox_put(&OutboxMessage { body: "{\"text\":\"other\"}".into(), ..progress.clone() }, T0 + 1).await.unwrap();
        assert_eq!((again, new_again), (id, false), "{}: the same key is the same message", db.name);
        let thread = OutboxMessage { thread_key: Some(progress.key.clone()), purpose: "thread".into(), ..message("deployment:1:thread:1", "{\"text\":\"backup done\"}") };
        let (thread_id, _) = db.outbox_put(&thread, T0 + 2).await.unwrap();

        let stored = db.outbox_message(&progress.key).await.unwrap().expect("stored");
        assert_eq!(
            (stored.id, stored.body.as_str(), stored.state.as_str(), stored.attempts, stored.platform_id.as_deref(), stored.deployment_id),
            (id, progress.body.as_str(), "pending", 0, None, Some(d.id)),
            "{}: a duplicate put does not change the body",
            db.name
        );
        let due: Vec<i64> = db.outbox_due(T0 + 3, 10).await.unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(due, [id, thread_id], "{}: oldest first", db.name);
        assert_eq!(db.outbox_due(T0 + 3, 1).await.unwrap().len(), 1, "{}: the limit holds", db.name);

        db.outbox_mark_posted(id, Some("1733065200.000100"), 0, T0 + 4).await.unwrap();
        let posted = db.outbox_message(&progress.key).await.unwrap().unwrap();
        assert_eq!((posted.state.as_str(), posted.platform_id.as_deref()), ("posted", Some("1733065200.000100")), "{}", db.name);
        let due: Vec<i64> = db.outbox_due(T0 + 5, 10).await.unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(due, [thread_id], "{}: a posted message is not due", db.name);
        assert_eq!(db.message_by_platform_id("C0PROD", "1733065200.000100").await.unwrap().map(|m| m.id), Some(id), "{}", db.name);
        assert_eq!(db.message_by_platform_id("C0STAGING", "1733065200.000100").await.unwrap(), None, "{}: another channel", db.name);
        assert_eq!(db.message_by_platform_id_any("1733065200.000100").await.unwrap().map(|m| m.id), Some(id), "{}", db.name);

        db.outbox_update_body(&progress.key, "{\"text\":\"✅ #1 succeeded\"}", T0 + 6).await.unwrap();
        let edited = db.outbox_message(&progress.key).await.unwrap().unwrap();
        assert_eq!((edited.body.as_str(), edited.state.as_str()), ("{\"text\":\"✅ #1 succeeded\"}", "pending"), "{}: an edit to make", db.name);
        assert_eq!(edited.platform_id.as_deref(), Some("1733065200.000100"), "{}: the edit targets the posted message", db.name);
        assert!(db.outbox_due(T0 + 7, 10).await.unwrap().iter().any(|m| m.id == id), "{}: due again", db.name);
        assert_eq!(db.outbox_message("no-such-key").await.unwrap(), None, "{}", db.name);
    }
}

fn keys(messages: &[deploybot::store::StoredMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.key.as_str()).collect()
}

#[tokio::test]
async fn posts_are_claimed_in_channel_order_and_a_reply_only_after_its_thread() {
    for db in stores().await {
        let put = |key: &str, channel: &str, thread: Option<&str>, recipient: Option<&str>| OutboxMessage {
            channel: channel.into(),
            thread_key: thread.map(str::to_string),
            recipient: recipient.map(str::to_string),
            ..message(key, "{\"text\":\"x\"}")
        };
        // Written in this order: a reply before its thread exists must not hold the channel.
        for (i, m) in [
            put("early-reply", "C0PROD", Some("progress"), None),
            put("progress", "C0PROD", None, None),
            put("reply", "C0PROD", Some("progress"), None),
            put("later", "C0PROD", None, None),
            put("other-channel", "C0STAGING", None, None),
            put("private", "C0PROD", None, Some("U0ALICE")),
        ]
        .iter()
        .enumerate()
        {
            db.outbox_put(m, T0 + i as i64).await.unwrap();
        }
        let first = db.outbox_claim("a", T0 + 10, MINUTE, 50).await.unwrap();
        assert_eq!(keys(&first), ["progress", "other-channel", "private"], "{}: one post per channel, private replies at once", db.name);
        assert!(db.outbox_claim("b", T0 + 11, MINUTE, 50).await.unwrap().is_empty(), "{}: claimed messages are not claimed twice", db.name);
        for m in &first {
            let platform_id = match m.key.as_str() {
                "progress" => Some("ts-1"),
                "other-channel" => Some("ts-2"),
                _ => None,
            };
            db.outbox_mark_posted(m.id, platform_id, m.rev, T0 + 12).await.unwrap();
        }
        let second = db.outbox_claim("a", T0 + 13, MINUTE, 50).await.unwrap();
        assert_eq!(keys(&second), ["early-reply"], "{}: the replies follow their thread, in order; the next post waits for them", db.name);
        db.outbox_mark_posted(second[0].id, Some("ts-3"), 0, T0 + 14).await.unwrap();
        assert_eq!(keys(&db.outbox_claim("a", T0 + 15, MINUTE, 50).await.unwrap()), ["reply"], "{}", db.name);
        let reply = db.outbox_message("reply").await.unwrap().unwrap();
        db.outbox_mark_posted(reply.id, Some("ts-4"), 0, T0 + 16).await.unwrap();
        assert_eq!(keys(&db.outbox_claim("a", T0 + 17, MINUTE, 50).await.unwrap()), ["later"], "{}", db.name);
        let private = db.outbox_message("private").await.unwrap().unwrap();
        assert_eq!((private.state.as_str(), private.platform_id), ("posted", None), "{}: an ephemeral has no id", db.name);
    }
}

#[tokio::test]
async fn a_text_written_during_a_delivery_stays_pending_for_the_next_edit() {
    for db in stores().await {
        let (id, _) = db.outbox_put(&message("deployment:1:progress", "{\"text\":\"⏳ deploy\"}"), T0).await.unwrap();
        let claimed = db.outbox_claim("a", T0 + 1, MINUTE, 10).await.unwrap();
        assert_eq!((claimed.len(), claimed[0].rev), (1, 0), "{}", db.name);
        // While the post is in flight, the pipeline moves on.
        assert!(db.outbox_update_body("deployment:1:progress", "{\"text\":\"✅ deploy\"}", T0 + 2).await.unwrap(), "{}", db.name);
        assert!(!db.outbox_update_body("deployment:1:progress", "{\"text\":\"✅ deploy\"}", T0 + 3).await.unwrap(), "{}: the same text is no change", db.name);
        db.outbox_mark_posted(id, Some("ts-1"), claimed[0].rev, T0 + 4).await.unwrap();
        let after = db.outbox_message("deployment:1:progress").await.unwrap().unwrap();
        assert_eq!(
            (after.state.as_str(), after.platform_id.as_deref(), after.rev, after.delivered_at),
            ("pending", Some("ts-1"), 1, Some(T0 + 4)),
            "{}: posted with the old text, so the new one is still to be sent, as an edit",
            db.name
        );
        let edit = db.outbox_claim("a", T0 + 5, MINUTE, 10).await.unwrap();
        assert_eq!((edit[0].body.as_str(), edit[0].platform_id.as_deref()), ("{\"text\":\"✅ deploy\"}", Some("ts-1")), "{}", db.name);
        db.outbox_mark_posted(id, Some("ts-1"), edit[0].rev, T0 + 6).await.unwrap();
        assert_eq!(db.outbox_message("deployment:1:progress").await.unwrap().unwrap().state, "posted", "{}", db.name);
    }
}

#[tokio::test]
async fn a_claim_lapses_after_its_lease_and_a_released_message_waits_until_asked() {
    for db in stores().await {
        db.outbox_put(&message("reply:7", "{}"), T0).await.unwrap();
        let claimed = db.outbox_claim("a", T0, MINUTE, 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", db.name);
        assert_eq!(db.outbox_in_flight(T0 + 1).await.unwrap(), 1, "{}", db.name);
        assert!(db.outbox_claim("b", T0 + MINUTE - 1, MINUTE, 10).await.unwrap().is_empty(), "{}: held by a", db.name);
        let taken_over = db.outbox_claim("b", T0 + MINUTE + 1, MINUTE, 10).await.unwrap();
        assert_eq!(keys(&taken_over), ["reply:7"], "{}: a's claim lapsed", db.name);
        db.outbox_release(claimed[0].id, "a", T0 + 3 * MINUTE).await.unwrap();
        assert!(db.outbox_claim("c", T0 + 2 * MINUTE, MINUTE, 10).await.unwrap().is_empty(), "{}: only the holder releases", db.name);
        db.outbox_release(claimed[0].id, "b", T0 + 3 * MINUTE).await.unwrap();
        assert!(db.outbox_claim("c", T0 + 3 * MINUTE - 1, MINUTE, 10).await.unwrap().is_empty(), "{}: not before the time asked", db.name);
        assert_eq!(db.outbox_claim("c", T0 + 3 * MINUTE, MINUTE, 10).await.unwrap().len(), 1, "{}", db.name);
        db.outbox_give_up(claimed[0].id, "channel_not_found", T0 + 3 * MINUTE).await.unwrap();
        assert!(db.outbox_due(i64::MAX, 10).await.unwrap().is_empty(), "{}: given up", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_pending_message_goes_to_exactly_one_of_eight_concurrent_deliverers() {
    for db in stores().await {
        let mut written = Vec::new();
        for i in 0..40 {
            // Edits of posted messages and private replies: none waits for another.
            let key = format!("m{i}");
            let m = OutboxMessage { recipient: (i % 2 == 0).then(|| "U0ALICE".to_string()), channel: format!("C{}", i % 3), ..message(&key, "{}") };
            let (id, _) = db.outbox_put(&m, T0).await.unwrap();
            if i % 2 == 1 {
                db.outbox_mark_posted(id, Some(&format!("ts-{i}")), 0, T0).await.unwrap();
                db.outbox_update_body(&key, "{\"text\":\"edited\"}", T0).await.unwrap();
            }
            written.push(key);
        }
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (db.store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut mine = Vec::new();
                    loop {
                        let batch = store.outbox_claim(&format!("replica-{i}"), T0 + 1, MINUTE, 3).await.unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.into_iter().map(|m| m.key));
                    }
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        claimed.sort();
        written.sort();
        assert_eq!(claimed, written, "{}: every message claimed exactly once", db.name);
    }
}

#[tokio::test]
async fn a_failed_post_is_retried_no_sooner_than_asked() {
    for db in stores().await {
        let (id, _) = db.outbox_put(&message("reply:1", "{}"), T0).await.unwrap();
        db.outbox_mark_failed(id, "ratelimited", T0 + MINUTE, T0 + 1).await.unwrap();
        assert!(db.outbox_due(T0 + MINUTE - 1, 10).await.unwrap().is_empty(), "{}: not before the retry time", db.name);
        let due = db.outbox_due(T0 + MINUTE, 10).await.unwrap();
        assert_eq!(due.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(), [(id, 1)], "{}", db.name);
        db.outbox_mark_failed(id, "ratelimited", T0 + 2 * MINUTE, T0 + MINUTE).await.unwrap();
        assert_eq!(db.outbox_message("reply:1").await.unwrap().unwrap().attempts, 2, "{}", db.name);
    }
}

#[tokio::test]
async fn a_secret_in_a_message_body_is_stored_masked() {
    let vars = deploybot::secrets::Vars::from_pairs([("DEPLOYBOT_TEST_OUTBOX_TOKEN", "xoxb-outbox-5ecret-7731")]);
    let secret = deploybot::secrets::SecretRef::parse("${DEPLOYBOT_TEST_OUTBOX_TOKEN}").unwrap().resolve_in(&vars).unwrap();
    for db in stores().await {
        db.outbox_put(&message("reply:secret", &format!("token is {}", secret.expose())), T0).await.unwrap();
        let body = db.outbox_message("reply:secret").await.unwrap().unwrap().body;
        assert!(!body.contains("xoxb-outbox-5ecret-7731"), "{}: {body}", db.name);
        db.outbox_update_body("reply:secret", &format!("still {}", secret.expose()), T0 + 1).await.unwrap();
        let body = db.outbox_message("reply:secret").await.unwrap().unwrap().body;
        assert!(!body.contains("xoxb-outbox-5ecret-7731") && body.starts_with("still "), "{}: {body}", db.name);
    }
}

// ------------------------------------------------------------------------------------ alerts

fn alert(fingerprint: &str, status: &str) -> AlertRecord {
    AlertRecord {
        fingerprint: fingerprint.into(),
        env: Some("production".into()),
        deployment_id: None,
        name: "HighErrorRate".into(),
        status: status.into(),
        source: "alertmanager".into(),
        labels: "{\"alertname\":\"HighErrorRate\",\"env\":\"production\"}".into(),
        annotations: "{\"summary\":\"5xx above 1%\"}".into(),
        starts_at: T0,
        ends_at: None,
    }
}

#[tokio::test]
async fn an_alert_is_deduplicated_by_fingerprint() {
    for db in stores().await {
        let (id, new) = db.upsert_alert(&alert("a1b2c3", "firing"), T0).await.unwrap();
        assert!(new, "{}", db.name);
        let (again, new_again) = db.upsert_alert(&alert("a1b2c3", "firing"), T0 + MINUTE).await.unwrap();
        assert_eq!((again, new_again), (id, false), "{}: Alertmanager repeats a firing alert", db.name);
        let resolved = AlertRecord { ends_at: Some(T0 + 10 * MINUTE), ..alert("a1b2c3", "resolved") };
        assert_eq!(db.upsert_alert(&resolved, T0 + 10 * MINUTE).await.unwrap(), (id, false), "{}: resolving updates the same alert", db.name);
        let (other, other_new) = db.upsert_alert(&alert("d4e5f6", "firing"), T0).await.unwrap();
        assert!(other_new && other != id, "{}: another fingerprint is another alert", db.name);

        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as("SELECT fingerprint, status, ends_at FROM alerts ORDER BY id").fetch_all(&pool).await.unwrap();
        assert_eq!(
            rows,
            vec![("a1b2c3".to_string(), "resolved".to_string(), Some(T0 + 10 * MINUTE)), ("d4e5f6".to_string(), "firing".to_string(), None)],
            "{}",
            db.name
        );
        pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_of_one_alert_create_it_once() {
    for db in stores().await {
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier) = (db.store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.upsert_alert(&alert("same-fingerprint", "firing"), T0).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(results.iter().filter(|(_, new)| *new).count(), 1, "{}: {results:?}", db.name);
        assert!(results.iter().all(|(id, _)| *id == results[0].0), "{}: {results:?}", db.name);
    }
}

// ------------------------------------------------------------------------------------ schedules

fn schedule(key: &str, next_run_at: Millis, cron: Option<&str>) -> Schedule {
    Schedule { id: 0, kind: "probe".into(), key: key.into(), env: Some("production".into()), deployment_id: None, cron: cron.map(str::to_string), next_run_at, enabled: true }
}

#[tokio::test]
async fn a_due_schedule_is_claimed_once_until_its_lease_expires() {
    for db in stores().await {
        db.put_schedule(&schedule("probe:production", T0 + MINUTE, Some("* * * * *")), T0).await.unwrap();
        assert_eq!(db.claim_schedule("replica-a", T0 + MINUTE - 1, 30_000).await.unwrap(), None, "{}: not due yet", db.name);
        let claimed = db.claim_schedule("replica-a", T0 + MINUTE, 30_000).await.unwrap().expect("due");
        assert_eq!((claimed.key.as_str(), claimed.cron.as_deref(), claimed.next_run_at, claimed.enabled), ("probe:production", Some("* * * * *"), T0 + MINUTE, true), "{}", db.name);
        assert_eq!(db.claim_schedule("replica-b", T0 + MINUTE + 1, 30_000).await.unwrap(), None, "{}: leased to replica-a", db.name);
        let reclaimed = db.claim_schedule("replica-b", T0 + MINUTE + 30_001, 30_000).await.unwrap();
        assert_eq!(reclaimed.map(|s| s.id), Some(claimed.id), "{}: a lost replica's schedule is claimed again", db.name);

        db.finish_schedule(claimed.id, Some(T0 + 2 * MINUTE), T0 + MINUTE + 30_002).await.unwrap();
        assert_eq!(db.claim_schedule("replica-a", T0 + 2 * MINUTE - 1, 30_000).await.unwrap(), None, "{}: next run not yet due", db.name);
        assert_eq!(db.claim_schedule("replica-a", T0 + 2 * MINUTE, 30_000).await.unwrap().map(|s| s.next_run_at), Some(T0 + 2 * MINUTE), "{}", db.name);
    }
}

#[tokio::test]
async fn a_one_off_schedule_fires_once_and_a_disabled_one_never() {
    for db in stores().await {
        let d = create(&db, "production", "v1.0.0", DeploymentState::Scheduled, T0).await;
        let mut deploy = schedule(&format!("deploy:{}", d.id), T0 + HOUR, None);
        deploy.kind = "deploy".into();
        deploy.deployment_id = Some(d.id);
        db.put_schedule(&deploy, T0).await.unwrap();
        db.put_schedule(&schedule("digest:weekly", T0 + HOUR, Some("0 9 * * mon")), T0).await.unwrap();
        db.disable_schedule("digest:weekly").await.unwrap();

        let claimed = db.claim_schedule("replica-a", T0 + HOUR, 30_000).await.unwrap().expect("the deploy is due");
        assert_eq!((claimed.kind.as_str(), claimed.deployment_id), ("deploy", Some(d.id)), "{}", db.name);
        db.finish_schedule(claimed.id, None, T0 + HOUR + 1).await.unwrap();
        assert_eq!(db.claim_schedule("replica-a", T0 + 30 * DAY, 30_000).await.unwrap(), None, "{}: fired once; the disabled digest never", db.name);

        // Putting a schedule again under its key replaces it and enables it.
        db.put_schedule(&schedule("digest:weekly", T0 + 2 * HOUR, Some("0 10 * * mon")), T0).await.unwrap();
        let digest = db.claim_schedule("replica-a", T0 + 2 * HOUR, 30_000).await.unwrap().expect("re-enabled");
        assert_eq!((digest.key.as_str(), digest.cron.as_deref()), ("digest:weekly", Some("0 10 * * mon")), "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_schedule_goes_to_exactly_one_of_several_concurrent_claimers() {
    for db in stores().await {
        db.put_schedule(&schedule("probe:production", T0, Some("* * * * *")), T0).await.unwrap();
        let claims = claim_concurrently(&db, 8, |store, owner| async move { store.claim_schedule(&owner, T0, 30_000).await.unwrap().map(|s| s.id) }).await;
        assert_eq!(claims.iter().flatten().count(), 1, "{}: {claims:?}", db.name);
    }
}

// ------------------------------------------------------------------------------------ jobs

/// Runs `n` claims at once (released together by a barrier); the results in claimer order.
async fn claim_concurrently<F, Fut, T>(db: &TestDb, n: usize, claim: F) -> Vec<T>
where
    F: Fn(Store, String) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let fut = claim(db.store.clone(), format!("replica-{i}"));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_job_is_handed_to_exactly_one_of_eight_concurrent_claimers_on_postgres() {
    let Some(db) = postgres().await else { return };
    let job = create(&db, "production", "v1.0.0", DeploymentState::Queued, T0).await;
    for round in 0..5 {
        let now = T0 + round * 10 * MINUTE;
        let claims = claim_concurrently(&db, 8, |store, owner| async move { store.claim_job(&owner, now, MINUTE).await.unwrap().map(|d| d.id) }).await;
        let winners: Vec<usize> = claims.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i).collect();
        assert_eq!(winners.len(), 1, "round {round}: {claims:?}");
        assert_eq!(claims[winners[0]], Some(job.id));
        assert_eq!(get(&db, job.id).await.lease_owner, Some(format!("replica-{}", winners[0])), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_of_several_queued_jobs_goes_to_exactly_one_concurrent_claimer() {
    for db in stores().await {
        let mut ids = Vec::new();
        for v in ["v1.0.0", "v1.0.1", "v1.0.2"] {
            ids.push(create(&db, "staging", v, DeploymentState::Queued, T0).await.id);
        }
        let claims = claim_concurrently(&db, 8, |store, owner| async move { store.claim_job(&owner, T0, MINUTE).await.unwrap().map(|d| d.id) }).await;
        let mut claimed: Vec<i64> = claims.iter().flatten().copied().collect();
        claimed.sort_unstable();
        assert_eq!(claimed, ids, "{}: every job exactly once: {claims:?}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_claims_take_the_oldest_ready_jobs_up_to_their_limit_and_never_one_twice() {
    for db in stores().await {
        create(&db, "production", "v0.9.0", DeploymentState::AwaitingApproval, T0).await;
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(create(&db, &format!("env{i:02}"), "v1.0.0", DeploymentState::Queued, T0).await.id);
        }
        let first = db.claim_jobs("replica-a", T0, MINUTE, 16).await.unwrap();
        assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..16], "{}: the oldest sixteen, in order", db.name);
        assert!(first.iter().all(|d| d.lease_owner.as_deref() == Some("replica-a") && d.lease_until == Some(T0 + MINUTE)), "{}", db.name);
        // Eight replicas race for the other 24, sixteen at a time: each exactly once.
        let claims = claim_concurrently(&db, 8, |store, owner| async move {
            store.claim_jobs(&owner, T0, MINUTE, 16).await.unwrap().into_iter().map(|d| d.id).collect::<Vec<_>>()
        })
        .await;
        let mut rest: Vec<i64> = claims.into_iter().flatten().collect();
        rest.sort_unstable();
        assert_eq!(rest, ids[16..], "{}: every other job exactly once", db.name);
        assert!(db.claim_jobs("replica-a", T0, MINUTE, 16).await.unwrap().is_empty(), "{}: nothing left but what awaits approval", db.name);
    }
}

#[tokio::test]
async fn only_a_ready_job_is_claimed_and_an_expired_lease_can_be_claimed_again() {
    for db in stores().await {
        create(&db, "production", "v0.9.0", DeploymentState::AwaitingApproval, T0).await;
        create(&db, "production", "v0.9.1", DeploymentState::Succeeded, T0).await;
        let mut later = request("staging", "v0.9.2", DeploymentState::Scheduled);
        later.scheduled_for = Some(T0 + HOUR);
        let scheduled = db.create_deployment(&later, T0).await.unwrap();
        assert_eq!(db.claim_job("replica-a", T0, MINUTE).await.unwrap(), None, "{}: nothing is ready", db.name);

        let job = create(&db, "production", "v1.0.0", DeploymentState::Queued, T0).await;
        let claimed = db.claim_job("replica-a", T0, MINUTE).await.unwrap().expect("the queued job");
        assert_eq!((claimed.id, claimed.lease_owner.as_deref(), claimed.lease_until), (job.id, Some("replica-a"), Some(T0 + MINUTE)), "{}", db.name);
        assert_eq!(db.claim_job("replica-b", T0 + MINUTE, MINUTE).await.unwrap(), None, "{}: the lease holds until it ends", db.name);
        assert!(db.renew_lease(job.id, "replica-a", T0 + 30_000, MINUTE).await.unwrap(), "{}", db.name);
        assert_eq!(db.claim_job("replica-b", T0 + MINUTE + 1, MINUTE).await.unwrap(), None, "{}: renewed until T0+90s", db.name);

        // replica-a dies; its job, now running, is picked up once the lease runs out.
        force(&db, job.id, DeploymentState::Running, Patch { started_at: Some(T0 + 1), ..Patch::default() }, T0 + 1).await;
        let taken = db.claim_job("replica-b", T0 + 90_001, MINUTE).await.unwrap().expect("the lease expired");
        assert_eq!((taken.id, taken.lease_owner.as_deref(), taken.state), (job.id, Some("replica-b"), DeploymentState::Running), "{}", db.name);
        assert!(!db.renew_lease(job.id, "replica-a", T0 + 90_002, MINUTE).await.unwrap(), "{}: replica-a lost it", db.name);
        assert!(db.renew_lease(job.id, "replica-b", T0 + 90_002, MINUTE).await.unwrap(), "{}", db.name);

        let due = db.claim_job("replica-c", T0 + HOUR, MINUTE).await.unwrap().expect("the scheduled job is due");
        assert_eq!(due.id, scheduled.id, "{}", db.name);
        assert_eq!(db.clear_leases().await.unwrap(), 2, "{}: both leases dropped", db.name);
        assert_eq!(get(&db, job.id).await.lease_owner, None, "{}", db.name);
    }
}

// ------------------------------------------------------------------------------------ history

#[tokio::test]
async fn history_returns_the_runbook_template_fields_newest_first() {
    for db in stores().await {
        let older = ran(&db, "production", "v0.9.0", "Jane Smith", T0 - 7 * DAY, T0 - 7 * DAY + 20 * MINUTE, DeploymentState::Succeeded).await;
        db.add_issue(older.id, "Database migration took longer than expected", T0 - 7 * DAY + 20 * MINUTE).await.unwrap();
        let v1 = ran(&db, "production", "v1.0.0", "John Doe", T0, T0 + 15 * MINUTE, DeploymentState::Succeeded).await;
        db.add_vote(&vote(v1.id, "Carol", VoteKind::Approve, T0 - 5 * MINUTE)).await.unwrap();
        db.add_vote(&vote(v1.id, "Dan", VoteKind::Approve, T0 - 4 * MINUTE)).await.unwrap();
        db.withdraw_vote(v1.id, "U0DAN", VoteKind::Approve, T0 - 3 * MINUTE).await.unwrap();
        db.add_vote(&vote(v1.id, "Erin", VoteKind::Reject, T0 - 2 * MINUTE)).await.unwrap();
        ran(&db, "staging", "v1.0.0", "John Doe", T0 - DAY, T0 - DAY + 5 * MINUTE, DeploymentState::Succeeded).await;
        create(&db, "production", "v1.0.1", DeploymentState::Denied, T0 + HOUR).await;

        let h = db.history(Some("production"), 10, NY).await.unwrap();
        assert_eq!(h.iter().map(|e| e.version.as_str()).collect::<Vec<_>>(), ["v1.0.0", "v0.9.0"], "{}: production only, only what ran, newest first", db.name);
        let e = &h[0];
        assert_eq!(
            *e,
            HistoryEntry {
                id: v1.id,
                env: "production".into(),
                kind: "deploy".into(),
                version: "v1.0.0".into(),
                state: "succeeded".into(),
                started_at: "2026-12-01 10:00 EST".into(),
                finished_at: Some("2026-12-01 10:15 EST".into()),
                deployed_by: "John Doe".into(),
                approvers: vec!["Carol".into()],
                duration_seconds: Some(900),
                hotfix: None,
                issues: None,
                rollback: None,
                migrations: None,
            },
            "{}: a withdrawn approval and a reject are not approvers",
            db.name
        );
        assert_eq!(h[1].issues.as_deref(), Some("Database migration took longer than expected"), "{}", db.name);
        assert_eq!((h[1].deployed_by.as_str(), h[1].duration_seconds), ("Jane Smith", Some(1200)), "{}", db.name);
        assert_eq!(db.history(Some("production"), 1, NY).await.unwrap().len(), 1, "{}: the limit holds", db.name);
        assert_eq!(db.history(None, 10, NY).await.unwrap().len(), 3, "{}: every environment", db.name);
        assert!(db.history(Some("development"), 10, NY).await.unwrap().is_empty(), "{}", db.name);

        let markdown = render_history_markdown(&h);
        let expected = format!(
            "# Deployment History\n\
             \n## v1.0.0 - 2026-12-01\n\
             - **Environment:** production (#{})\n\
             - **Deployed by:** John Doe\n\
             - **Approved by:** Carol\n\
             - **Duration:** 15 minutes\n\
             - **Outcome:** succeeded\n\
             - **Issues:** None\n\
             - **Rollback:** N/A\n\
             \n## v0.9.0 - 2026-11-24\n\
             - **Environment:** production (#{})\n\
             - **Deployed by:** Jane Smith\n\
             - **Duration:** 20 minutes\n\
             - **Outcome:** succeeded\n\
             - **Issues:** Database migration took longer than expected\n\
             - **Rollback:** N/A\n",
            v1.id, older.id
        );
        assert_eq!(markdown, expected, "{}", db.name);
    }
}

#[tokio::test]
async fn history_says_how_a_deployment_was_rolled_back() {
    for db in stores().await {
        // An automatic rollback inside the job.
        let auto = ran(&db, "production", "v1.1.0", "Alice", T0, T0 + 9 * MINUTE, DeploymentState::RolledBack).await;
        force(&db, auto.id, DeploymentState::RolledBack, Patch { error: Some("health check failed: GET /api/actuator/health returned 503".into()), ..Patch::default() }, T0 + 9 * MINUTE).await;
        for service in ["backend", "frontend"] {
            let s = DeploymentService {
                deployment_id: auto.id,
                service: service.into(),
                from_version: Some("v1.0.0".into()),
                from_ref: None,
                to_version: "v1.1.0".into(),
                to_ref: None,
                state: "rolled_back".into(),
            };
            db.put_deployment_service(&s, T0).await.unwrap();
        }
        // A deploy that succeeded and was rolled back later with /rollback.
        let later = ran(&db, "production", "v1.2.0", "Alice", T0 + DAY, T0 + DAY + 10 * MINUTE, DeploymentState::Succeeded).await;
        let mut req = request("production", "v1.0.0", DeploymentState::Queued);
        req.kind = DeploymentKind::Rollback;
        req.rollback_of = Some(later.id);
        req.requested_by_name = "Dan".into();
        let rb = db.create_deployment(&req, T0 + DAY + HOUR).await.unwrap();
        force(&db, rb.id, DeploymentState::Succeeded, Patch { started_at: Some(T0 + DAY + HOUR), finished_at: Some(T0 + DAY + HOUR + 4 * MINUTE), ..Patch::default() }, T0 + DAY + HOUR + 4 * MINUTE).await;
        let failed = ran(&db, "production", "v1.3.0", "Alice", T0 + 2 * DAY, T0 + 2 * DAY + MINUTE, DeploymentState::RollbackFailed).await;

        let h = db.history(Some("production"), 10, NY).await.unwrap();
        let by_id = |id: i64| h.iter().find(|e| e.id == id).unwrap_or_else(|| panic!("{}: #{id} missing from history", db.name));
        assert_eq!(by_id(auto.id).rollback.as_deref(), Some("automatic, to v1.0.0"), "{}", db.name);
        assert_eq!(by_id(auto.id).issues.as_deref(), Some("health check failed: GET /api/actuator/health returned 503"), "{}: the error is the issue", db.name);
        assert_eq!(by_id(later.id).rollback, Some(format!("rolled back by #{} (Dan) to v1.0.0", rb.id)), "{}", db.name);
        assert_eq!(by_id(rb.id).rollback, Some(format!("this is a rollback of #{}", later.id)), "{}", db.name);
        assert_eq!(by_id(failed.id).rollback.as_deref(), Some("automatic rollback FAILED, needs a human"), "{}", db.name);
        assert_eq!(by_id(failed.id).issues.as_deref(), Some("ended rollback_failed"), "{}", db.name);

        let markdown = render_history_markdown(&h);
        assert!(markdown.contains("\n## v1.0.0 (rollback) - 2026-12-02\n"), "{}: {markdown}", db.name);
        assert!(markdown.contains("- **Rollback:** automatic, to v1.0.0\n"), "{}: {markdown}", db.name);
    }
}

#[test]
fn an_empty_history_renders_as_the_template_heading_and_a_note() {
    assert_eq!(render_history_markdown(&[]), "# Deployment History\n\nNo deployments yet.\n");
}

// ------------------------------------------------------------------------------------ stats

fn finished(id: i64, env: &str, kind: DeploymentKind, state: DeploymentState, started: Millis, minutes: i64) -> Deployment {
    let failed = matches!(state, DeploymentState::Failed | DeploymentState::RolledBack | DeploymentState::RollbackFailed);
    Deployment {
        id,
        env: env.into(),
        kind,
        version: format!("v1.0.{id}"),
        services: vec!["backend".into()],
        state,
        requested_by: "U0ALICE".into(),
        requested_by_name: "Alice".into(),
        channel: "C0PROD".into(),
        hotfix_reason: None,
        scheduled_for: None,
        rollback_of: None,
        with_db: false,
        approvals_required: 0,
        approval_expires_at: None,
        current_step: None,
        cancel_requested_by: None,
        issues: None,
        error: None,
        lease_owner: None,
        lease_until: None,
        rev: 1,
        created_at: started - MINUTE,
        started_at: Some(started),
        failed_at: failed.then_some(started + 2 * MINUTE),
        finished_at: Some(started + minutes * MINUTE),
        updated_at: started + minutes * MINUTE,
        request_event: None,
        resolution: None,
    }
}

fn input(d: Deployment) -> StatsInput {
    StatsInput { deployment: d, rolled_back_later: false, next_success_at: None }
}

#[test]
fn stats_compute_the_four_keys_on_known_sets_of_deployments() {
    use DeploymentKind::{Deploy, Rollback};
    use DeploymentState::*;
    let prod = "production";
    struct Case {
        name: &'static str,
        rows: Vec<StatsInput>,
        days: u32,
        expect: Stats,
    }
    let stats = |days, deployments, succeeded, failed, rollbacks, per_week, cfr: Option<f64>, mttr: Option<i64>, median: Option<i64>| Stats {
        days,
        deployments,
        succeeded,
        failed,
        rollbacks,
        per_week,
        change_failure_rate: cfr,
        mean_time_to_restore_seconds: mttr,
        median_duration_seconds: median,
    };
    let cases = vec![
        Case { name: "nothing deployed", rows: vec![], days: 30, expect: stats(30, 0, 0, 0, 0, 0.0, None, None, None) },
        Case {
            name: "four successes: median of an even count is the mean of the middle two",
            rows: [10, 20, 15, 30].into_iter().enumerate().map(|(i, m)| input(finished(i as i64 + 1, prod, Deploy, Succeeded, T0 + i as i64 * DAY, m))).collect(),
            days: 28,
            expect: stats(28, 4, 4, 0, 0, 1.0, Some(0.0), None, Some(1050)),
        },
        Case {
            name: "two of five rolled back automatically: time to restore runs from detection to the end of the rollback",
            rows: vec![
                input(finished(1, prod, Deploy, Succeeded, T0, 10)),
                input(finished(2, prod, Deploy, RolledBack, T0 + DAY, 9)), // detected at +2m, restored at +9m: 7m
                input(finished(3, prod, Deploy, Succeeded, T0 + 2 * DAY, 15)),
                input(finished(4, prod, Deploy, RolledBack, T0 + 3 * DAY, 5)), // 3m
                input(finished(5, prod, Deploy, Succeeded, T0 + 4 * DAY, 20)),
            ],
            days: 28,
            expect: stats(28, 5, 3, 2, 0, 0.75, Some(0.4), Some(300), Some(900)),
        },
        Case {
            name: "a later /rollback marks a successful deploy as a failed change, restored when the rollback ends",
            rows: vec![
                StatsInput { deployment: finished(1, prod, Deploy, Succeeded, T0, 15), rolled_back_later: true, next_success_at: None },
                input(Deployment { rollback_of: Some(1), ..finished(2, prod, Rollback, Succeeded, T0 + 40 * MINUTE, 15) }),
            ],
            days: 7,
            expect: stats(7, 1, 0, 1, 1, 0.0, Some(1.0), Some(40 * 60), Some(900)),
        },
        Case {
            name: "a failed deploy is restored by the next success in its own environment",
            rows: vec![
                input(finished(1, prod, Deploy, Failed, T0, 4)),                            // detected T0+2m
                input(finished(2, "staging", Deploy, Succeeded, T0 + 5 * MINUTE, 1)),      // another environment
                input(finished(3, prod, Deploy, Succeeded, T0 + 52 * MINUTE, 10)),         // ends T0+62m: 60m after detection
                input(finished(4, prod, Deploy, Succeeded, T0 + 2 * HOUR, 10)),            // later, not the restore
            ],
            days: 14,
            expect: stats(14, 4, 3, 1, 0, 1.5, Some(0.25), Some(3600), Some(600)),
        },
        Case {
            name: "a cancelled change is not in the failure rate",
            rows: vec![input(finished(1, prod, Deploy, Succeeded, T0, 12)), input(finished(2, prod, Deploy, Cancelled, T0 + HOUR, 1))],
            days: 7,
            expect: stats(7, 2, 1, 0, 0, 1.0, Some(0.0), None, Some(720)),
        },
        Case {
            name: "a failure with no restore yet has no time to restore",
            rows: vec![input(finished(1, prod, Deploy, RollbackFailed, T0, 6))],
            days: 7,
            expect: stats(7, 1, 0, 1, 0, 0.0, Some(1.0), None, None),
        },
    ];
    let mut failures = Vec::new();
    for mut case in cases {
        StatsInput::pair_restores(&mut case.rows);
        let got = Stats::compute(&case.rows, case.days, from_millis(T0 + 30 * DAY));
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a == b,
        };
        let same = got.days == case.expect.days
            && got.deployments == case.expect.deployments
            && got.succeeded == case.expect.succeeded
            && got.failed == case.expect.failed
            && got.rollbacks == case.expect.rollbacks
            && (got.per_week - case.expect.per_week).abs() < 1e-9
            && close(got.change_failure_rate, case.expect.change_failure_rate)
            && got.mean_time_to_restore_seconds == case.expect.mean_time_to_restore_seconds
            && got.median_duration_seconds == case.expect.median_duration_seconds;
        if !same {
            failures.push(format!("{}:\n  expected {:?}\n  got      {:?}", case.name, case.expect, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn stats_input_marks_a_deploy_undone_by_a_later_rollback_and_honours_the_period() {
    for db in stores().await {
        ran(&db, "production", "v0.8.0", "Alice", T0 - 40 * DAY, T0 - 40 * DAY + 10 * MINUTE, DeploymentState::Succeeded).await;
        let good = ran(&db, "production", "v0.9.0", "Alice", T0 - DAY, T0 - DAY + 10 * MINUTE, DeploymentState::Succeeded).await;
        let bad = ran(&db, "production", "v1.0.0", "Alice", T0, T0 + 15 * MINUTE, DeploymentState::Succeeded).await;
        ran(&db, "staging", "v1.0.0", "Alice", T0, T0 + 5 * MINUTE, DeploymentState::Succeeded).await;
        let mut req = request("production", "v0.9.0", DeploymentState::Queued);
        req.kind = DeploymentKind::Rollback;
        req.rollback_of = Some(bad.id);
        let rb = db.create_deployment(&req, T0 + 30 * MINUTE).await.unwrap();
        force(&db, rb.id, DeploymentState::Succeeded, Patch { started_at: Some(T0 + 30 * MINUTE), finished_at: Some(T0 + 40 * MINUTE), ..Patch::default() }, T0 + 40 * MINUTE).await;

        let rows = db.stats_input(Some("production"), T0 - 30 * DAY).await.unwrap();
        let marks: Vec<(i64, bool)> = rows.iter().map(|r| (r.deployment.id, r.rolled_back_later)).collect();
        assert_eq!(marks, [(good.id, false), (bad.id, true), (rb.id, false)], "{}: production, the last 30 days, oldest first", db.name);
        let stats = Stats::compute(&rows, 30, from_millis(T0 + DAY));
        assert_eq!((stats.deployments, stats.succeeded, stats.failed, stats.rollbacks), (2, 1, 1, 1), "{}", db.name);
        assert_eq!(stats.change_failure_rate, Some(0.5), "{}", db.name);
        assert_eq!(stats.mean_time_to_restore_seconds, Some(25 * 60), "{}: from the bad deploy's end to the rollback's end", db.name);
        assert_eq!(db.stats_input(None, T0 - 30 * DAY).await.unwrap().len(), 4, "{}: every environment", db.name);
    }
}

#[tokio::test]
async fn a_transition_from_no_states_moves_nothing() {
    for db in stores().await {
        let d = create(&db, "staging", "v1.0.0", DeploymentState::Queued, T0).await;
        let moved = db.transition(d.id, &[], DeploymentState::Running, &Patch::default(), "deploybot", T0 + 1).await;
        assert!(matches!(moved, Ok(false)), "{}: {moved:?}", db.name);
        assert_eq!(get(&db, d.id).await.state, DeploymentState::Queued, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_memory_sqlite_store_serves_concurrent_callers_from_one_database() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_deployment(&request("staging", &format!("v1.0.{i}"), DeploymentState::Queued), T0).await.map(|d| d.id).map_err(|e| format!("{e:#}")) })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("every caller sees the migrated database"));
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=8).collect::<Vec<i64>>());
    assert_eq!(store.deployments(Some("staging"), &[], 100).await.unwrap().len(), 8, "one database, not one per connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_eight_concurrent_lock_attempts_exactly_one_gets_the_lock_and_the_rest_see_it() {
    for db in stores().await {
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (store, barrier) = (db.store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.try_lock(&manual_lock("production", &format!("U0USER{i}"), T0 + i)).await.unwrap()
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{}: {results:?}", db.name);
        let holder = db.lock("production").await.unwrap().expect("held");
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|l| *l == holder), "{}: everyone else sees the holder: {results:?}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_event_delivered_eight_times_at_once_is_handled_once() {
    for db in stores().await {
        let barrier = Arc::new(Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, barrier) = (db.store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.mark_event("Ev0RETRIED", "slack", T0).await.unwrap()
                })
            })
            .collect();
        let mut firsts = 0;
        for t in tasks {
            firsts += usize::from(t.await.unwrap());
        }
        assert_eq!(firsts, 1, "{}", db.name);
    }
}

#[tokio::test]
async fn history_names_the_migrations_the_deployment_applied() {
    for db in stores().await {
        let d = ran(&db, "production", "v1.1.0", "John Doe", T0, T0 + 10 * MINUTE, DeploymentState::Succeeded).await;
        let step = db.start_step(d.id, 3, "migrations", T0 + MINUTE).await.unwrap();
        db.finish_step(step.id, StepState::Succeeded, Some("Migrations: applied 2 (1 - create customers, 2 - add invoices)\nFlyway output…"), T0 + 2 * MINUTE)
            .await
            .unwrap();
        let plain = ran(&db, "production", "v1.1.1", "John Doe", T0 + HOUR, T0 + HOUR + MINUTE, DeploymentState::Succeeded).await;

        let h = db.history(Some("production"), 10, NY).await.unwrap();
        let with = h.iter().find(|e| e.id == d.id).unwrap();
        assert_eq!(with.migrations.as_deref(), Some("applied 2 (1 - create customers, 2 - add invoices)"), "{}", db.name);
        assert_eq!(h.iter().find(|e| e.id == plain.id).unwrap().migrations, None, "{}", db.name);
        let md = render_history_markdown(&h);
        assert!(md.contains("- **Migrations:** applied 2 (1 - create customers, 2 - add invoices)\n"), "{}: {md}", db.name);
        let json = serde_json::to_value(&h).unwrap();
        assert!(json[0].get("migrations").is_none(), "{}: no key when no migrations ran", db.name);
    }
}

/// Discord interaction tokens: kept once per interaction, read back while they are valid,
/// forgotten after.
#[tokio::test]
async fn discord_interaction_tokens_are_kept_for_their_lifetime() {
    const KEEP: i64 = 15 * MINUTE;
    for db in stores().await {
        let s = &db.store;
        s.put_interaction_token("1200000000000000001", "token-one", T0, KEEP).await.unwrap();
        s.put_interaction_token("1200000000000000001", "token-replayed", T0 + 1, KEEP).await.unwrap();
        assert_eq!(s.interaction_token("1200000000000000001", T0 - KEEP).await.unwrap(), Some(("token-one".to_string(), T0)), "{}: the first token stays", db.name);
        assert_eq!(s.interaction_token("1200000000000000001", T0 + 1).await.unwrap(), None, "{}: older than asked for", db.name);
        assert_eq!(s.interaction_token("1200000000000000002", 0).await.unwrap(), None, "{}", db.name);
        // A later interaction prunes the expired ones.
        s.put_interaction_token("1200000000000000003", "token-three", T0 + KEEP + 1, KEEP).await.unwrap();
        assert_eq!(s.interaction_token("1200000000000000001", 0).await.unwrap(), None, "{}: pruned", db.name);
        assert!(s.interaction_token("1200000000000000003", T0).await.unwrap().is_some(), "{}", db.name);
    }
}
