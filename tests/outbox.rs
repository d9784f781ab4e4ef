//! The outbox against a chat platform the test controls: writing never waits for the platform,
//! a text written while its post is in flight goes out as the next edit, and two replicas
//! delivering from one PostgreSQL store post each message once, in order per channel.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deploybot::chat::outbox::{Draft, Outbox};
use deploybot::chat::{ChatError, ChatPlatform, OutMessage};
use support::db::{postgres, sqlite};
use tokio::sync::{watch, Semaphore};

/// One call the platform accepted.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Post { channel: String, id: String, text: String },
    Reply { channel: String, thread: String, id: String, text: String },
    Edit { channel: String, id: String, text: String },
    Ephemeral { channel: String, user: String, text: String },
}

/// A platform whose calls wait for a permit from the test (`gate`), or that never answers.
struct Scripted {
    gate: Option<Arc<Semaphore>>,
    hang: bool,
    seen: Mutex<Vec<Seen>>,
    texts: Mutex<HashMap<String, String>>,
    next: Mutex<u64>,
}

impl Scripted {
    fn new(gate: Option<Arc<Semaphore>>, hang: bool) -> Arc<Scripted> {
        Arc::new(Scripted { gate, hang, seen: Mutex::default(), texts: Mutex::default(), next: Mutex::new(0) })
    }

    async fn answer(&self) {
        if self.hang {
            std::future::pending::<()>().await;
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
    }

    fn id(&self) -> String {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        format!("m{n}")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl ChatPlatform for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    async fn post(&self, _key: &str, channel: &str, msg: &OutMessage) -> Result<String, ChatError> {
        self.answer().await;
        let id = self.id();
        self.texts.lock().unwrap().insert(id.clone(), msg.text.clone());
        self.seen.lock().unwrap().push(Seen::Post { channel: channel.into(), id: id.clone(), text: msg.text.clone() });
        Ok(id)
    }
    async fn edit(&self, channel: &str, id: &str, msg: &OutMessage) -> Result<(), ChatError> {
        self.answer().await;
        assert!(self.texts.lock().unwrap().insert(id.into(), msg.text.clone()).is_some(), "an edit of a message never posted");
        self.seen.lock().unwrap().push(Seen::Edit { channel: channel.into(), id: id.into(), text: msg.text.clone() });
        Ok(())
    }
    async fn reply(&self, _key: &str, channel: &str, thread: &str, msg: &OutMessage) -> Result<String, ChatError> {
        self.answer().await;
        assert!(self.texts.lock().unwrap().contains_key(thread), "a reply in a thread never posted");
        let id = self.id();
        self.texts.lock().unwrap().insert(id.clone(), msg.text.clone());
        self.seen.lock().unwrap().push(Seen::Reply { channel: channel.into(), thread: thread.into(), id: id.clone(), text: msg.text.clone() });
        Ok(id)
    }
    async fn ephemeral(&self, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        self.answer().await;
        self.seen.lock().unwrap().push(Seen::Ephemeral { channel: channel.into(), user: user.into(), text: msg.text.clone() });
        Ok(())
    }
    async fn in_group(&self, _user: &str, _group: &str) -> Result<bool, ChatError> {
        Ok(false)
    }
}

fn draft<'a>(key: &'a str, channel: &'a str, thread_key: Option<&'a str>, text: &'a str) -> Draft<'a> {
    Draft { key, channel, thread_key, deployment_id: None, alert_id: None, purpose: "progress", text }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_never_waits_for_a_platform_that_does_not_answer() {
    let db = sqlite().await;
    let chat = Scripted::new(None, true);
    let outbox = Outbox::new(db.store.clone(), chat.clone(), "replica-a");
    let (stop, shutdown) = watch::channel(false);
    let deliverer = tokio::spawn(outbox.clone().run(shutdown));
    // If writing awaited the platform, none of these would ever return: the timeout only
    // keeps a broken build from hanging the suite.
    tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..20 {
            outbox.send(draft("deployment:1:progress", "C1", None, &format!("step {i}"))).await.unwrap();
            outbox.send(draft(&format!("deployment:1:note:{i}"), "C1", Some("deployment:1:progress"), "a note")).await.unwrap();
        }
        outbox.ephemeral("reply:ev1", "C1", "U0ALICE", "👍 requested").await.unwrap();
    })
    .await
    .expect("writes completed while the platform hangs");
    assert!(chat.seen().is_empty());
    let progress = db.outbox_message("deployment:1:progress").await.unwrap().unwrap();
    assert_eq!((progress.state.as_str(), progress.body.contains("step 19")), ("pending", true), "the latest text waits in the store");
    let _ = stop.send(true);
    deliverer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_written_while_its_post_is_in_flight_goes_out_as_the_next_edit() {
    let db = sqlite().await;
    let gate = Arc::new(Semaphore::new(0));
    let chat = Scripted::new(Some(gate.clone()), false);
    let outbox = Outbox::new(db.store.clone(), chat.clone(), "replica-a");
    outbox.send(draft("k", "C1", None, "⏳ deploy")).await.unwrap();
    let delivering = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.drain().await.unwrap() }
    });
    // The post is in flight (claimed, waiting for the platform) when the pipeline moves on.
    while db.outbox_in_flight(chrono::Utc::now().timestamp_millis()).await.unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    outbox.send(draft("k", "C1", None, "✅ deploy")).await.unwrap();
    gate.add_permits(10);
    delivering.await.unwrap();
    outbox.drain().await.unwrap();
    assert_eq!(
        chat.seen(),
        [
            Seen::Post { channel: "C1".into(), id: "m1".into(), text: "⏳ deploy".into() },
            Seen::Edit { channel: "C1".into(), id: "m1".into(), text: "✅ deploy".into() }
        ]
    );
    assert_eq!(db.outbox_message("k").await.unwrap().unwrap().state, "posted");
    // The same text again is no new delivery; a private reply under a used key is not sent again.
    outbox.send(draft("k", "C1", None, "✅ deploy")).await.unwrap();
    outbox.ephemeral("reply:ev1", "C1", "U0ALICE", "👍 requested").await.unwrap();
    outbox.ephemeral("reply:ev1", "C1", "U0ALICE", "👍 requested").await.unwrap();
    outbox.drain().await.unwrap();
    assert_eq!(chat.seen().len(), 3, "{:?}", chat.seen());
    assert_eq!(chat.seen()[2], Seen::Ephemeral { channel: "C1".into(), user: "U0ALICE".into(), text: "👍 requested".into() });
}

/// Two replicas deliver while messages are being written: every message posted once, posts in
/// each channel in the order written, replies after their thread, final texts shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_post_each_message_once_in_order() {
    let Some(db) = postgres().await else { return };
    let chat = Scripted::new(None, false);
    let (stop, shutdown) = watch::channel(false);
    let writer = Outbox::new(db.store.clone(), chat.clone(), "replica-a");
    let replicas: Vec<_> = ["replica-a", "replica-b"]
        .into_iter()
        .map(|owner| tokio::spawn(Outbox::new(db.store.clone(), chat.clone(), owner).run(shutdown.clone())))
        .collect();
    let channels = ["C1", "C2", "C3"];
    for round in 0..10 {
        for (c, channel) in channels.iter().enumerate() {
            let progress = format!("d{c}:{round}:progress");
            writer.send(draft(&progress, channel, None, &format!("{channel} #{round} requested"))).await.unwrap();
            writer.send(draft(&format!("d{c}:{round}:thread"), channel, Some(&progress), &format!("{channel} #{round} note"))).await.unwrap();
            writer.send(draft(&progress, channel, None, &format!("{channel} #{round} succeeded"))).await.unwrap();
        }
    }
    // Both replicas deliver; done when nothing is pending (bounded, in case delivery is broken).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !db.outbox_due(i64::MAX, 1000).await.unwrap().is_empty() || db.outbox_in_flight(chrono::Utc::now().timestamp_millis()).await.unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the outbox never emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for r in replicas {
        r.await.unwrap();
    }

    let seen = chat.seen();
    for channel in channels {
        let posted: Vec<&str> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Post { channel: c, text, .. } | Seen::Reply { channel: c, text, .. } if c == channel => Some(text.as_str()),
                _ => None,
            })
            .map(|t| t.trim_start_matches(&format!("{channel} ")))
            .collect();
        // Each round's progress post (with whatever text it had then), then its note.
        assert_eq!(posted.len(), 20, "{channel}: each message posted once: {posted:?}");
        for (round, pair) in posted.chunks(2).enumerate() {
            assert!(pair[0].starts_with(&format!("#{round} ")) && !pair[0].ends_with("note"), "{channel}: out of order: {posted:?}");
            assert_eq!(pair[1], format!("#{round} note"), "{channel}: out of order: {posted:?}");
        }
    }
    let texts = chat.texts.lock().unwrap().clone();
    for channel in channels {
        for round in 0..10 {
            let key = format!("d{}:{round}:progress", channels.iter().position(|c| *c == channel).unwrap());
            let stored = db.outbox_message(&key).await.unwrap().unwrap();
            assert_eq!(stored.state, "posted");
            assert_eq!(texts.get(stored.platform_id.as_deref().unwrap()).map(String::as_str), Some(format!("{channel} #{round} succeeded").as_str()), "{key}: the final text is shown");
        }
    }
}
