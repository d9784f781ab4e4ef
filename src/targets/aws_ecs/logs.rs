//! CloudWatch Logs for `/logs` and the log watch: the log group and stream prefix come from the
//! service container's `awslogs` configuration in its current task definition, as ECS writes
//! them (`<awslogs-stream-prefix>/<container name>/<task id>`).

use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ecs::types::{ContainerDefinition, LogDriver};

use crate::secrets::redact;
use crate::targets::{cut_line, LogQuery, TargetError, LOG_FETCH_MAX_LINES};

/// Pages of FilterLogEvents read at most for one query (each up to 10 000 events).
const MAX_PAGES: usize = 20;

/// Where a container's logs go: the `awslogs` group and the stream prefix of its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogSource {
    pub group: String,
    /// `prefix/container/`, or `None` when the task definition sets no `awslogs-stream-prefix`
    /// (the streams are then named by task id alone, and the whole group is read).
    pub stream_prefix: Option<String>,
}

/// The container's `awslogs` settings, or why there are none.
pub(super) fn source(container: &ContainerDefinition) -> Result<LogSource, String> {
    let name = container.name().unwrap_or("the container");
    let Some(config) = container.log_configuration() else {
        return Err(format!("container {name} has no logConfiguration in its task definition: its logs do not go to CloudWatch Logs"));
    };
    if config.log_driver() != &LogDriver::Awslogs {
        return Err(format!("container {name} logs through the {} driver, not awslogs: deploybot reads CloudWatch Logs only", config.log_driver().as_str()));
    }
    let options = config.options().cloned().unwrap_or_default();
    let group = options.get("awslogs-group").cloned().ok_or_else(|| format!("container {name}'s awslogs configuration has no awslogs-group"))?;
    let stream_prefix = options.get("awslogs-stream-prefix").map(|p| format!("{p}/{name}/"));
    Ok(LogSource { group, stream_prefix })
}

/// The latest `query.limit` events of `source` since `query.since_ms`, oldest first.
pub(super) async fn read(client: &aws_sdk_cloudwatchlogs::Client, source: &LogSource, query: &LogQuery) -> Result<Vec<String>, TargetError> {
    let limit = query.limit.min(LOG_FETCH_MAX_LINES);
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut call = client.filter_log_events().log_group_name(&source.group).start_time(query.since_ms);
        if let Some(prefix) = &source.stream_prefix {
            call = call.log_stream_name_prefix(prefix);
        }
        if let Some(t) = &token {
            call = call.next_token(t);
        }
        let out = call.send().await.map_err(|e| {
            let reason = match e.code() {
                Some("ResourceNotFoundException") => format!("CloudWatch Logs group {} does not exist", source.group),
                Some(code) => format!("reading CloudWatch Logs group {} failed: {code}: {}", source.group, e.message().unwrap_or("")),
                None => format!("cannot read CloudWatch Logs group {}: {}", source.group, DisplayErrorContext(&e)),
            };
            TargetError::failed(redact(&reason))
        })?;
        let mut events = out.events().to_vec();
        events.sort_by_key(|e| e.timestamp().unwrap_or_default());
        // The prefix is checked on each event too: an emulator (moto) may ignore it in the request.
        let ours = |e: &aws_sdk_cloudwatchlogs::types::FilteredLogEvent| match (&source.stream_prefix, e.log_stream_name()) {
            (Some(prefix), Some(stream)) => stream.starts_with(prefix.as_str()),
            _ => true,
        };
        for event in events.into_iter().filter(ours) {
            for line in event.message().unwrap_or_default().lines() {
                lines.push_back(cut_line(line));
                if lines.len() > limit {
                    lines.pop_front();
                }
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() && Some(t) != token.as_deref() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(lines.into())
}
