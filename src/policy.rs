//! Deployment windows (PRODUCT.md section 4): may a deployment start at a given instant, and when
//! does the window next open. Pure: no I/O, and the time is always passed in, never read from a clock.
//!
//! `[environments.X.window]` deserializes into [`WindowConfig`] and is validated once, at load, into a
//! [`Window`] by [`Window::from_config`], which reports every mistake with its sub-path (`allow[0].days`,
//! `freeze[1].end`, ...). A [`Policy`] is an optional window: an environment without one is always open.
//!
//! # Semantics
//!
//! - Everything is evaluated in the window's own IANA timezone on wall-clock local times. A local time
//!   that a spring-forward gap skips resolves to the first instant after the gap; a local time that a
//!   fall-back repeats resolves to the earliest of its instants. This applies to allow-entry bounds,
//!   midnights and cron occurrences alike: an allow entry on a given local day is the span between
//!   the instants of its two bounds. So on the spring change an entry starting at 02:30 opens at
//!   03:00, and on the autumn change an entry ending at 01:30 ends at the first 01:30 (the repeated
//!   01:00–01:30 is outside it) while one running 01:30–03:00 also covers the repeated hour.
//! - `allow` entries: `days` (default every day) and `hours` `HH:MM-HH:MM`, start inclusive, end
//!   exclusive, `24:00` allowed as the end, the end after the start (an overnight span is two entries);
//!   no `hours` means the whole day. Entries are a union. No `allow` at all means every day, all day.
//!   Day grammar: `mon`..`sun` or full names (case-insensitive), ranges `tue-wed` that may wrap
//!   (`fri-mon`), comma lists `mon,wed,fri`, `*`.
//! - Denials beat `allow`: a holiday (a whole local day; `YYYY-MM-DD` once, `MM-DD` every year, `02-29`
//!   only in leap years), a month-end day (the last `month_end_days` calendar days of the month, 0..=15)
//!   and a freeze.
//! - A freeze is `[start, end)` between instants of two cron expressions: frozen at `t` when the latest
//!   `start` occurrence `s <= t` has no `end` occurrence in `(s, t]`. A freeze whose end never comes
//!   after its start stays closed; identical start and end schedules are rejected.
//! - Cron is the standard 5-field form (minute hour day-of-month month day-of-week) or `@yearly`,
//!   `@monthly`, `@weekly`, `@daily`, `@hourly`, evaluated on local wall-clock time. Day of week is
//!   numbered as in standard cron (0 and 7 are Sunday) and takes names (`sun`..`sat`); months take
//!   `jan`..`dec`; ranges do not wrap; `a/n` means `a-max/n`; `?`, `L`, `W`, `#` are not supported.
//!   When both day of month and day of week are restricted (neither starts with `*`) a day matching
//!   either matches, as in Vixie cron. The `cron` crate (which does the calendar search) differs in
//!   three ways we hide: it wants seconds first and numbers Sunday 1 through Saturday 7, so we
//!   translate to explicit value lists; it always requires both day fields, so the OR case is two
//!   schedules; and it skips times in a DST gap and fires repeated ones twice, so we search on the
//!   naive wall clock and resolve each occurrence with the rule above.
//! - A hotfix may deploy at any time except inside a freeze with `hotfix = false`. `hotfix` defaults to
//!   `true` when omitted (the runbook: "Hotfixes: as needed, any time"), so a freeze must opt in to
//!   blocking hotfixes.
//! - When several denials apply, the reason names the first of: freeze, holiday, month-end, outside
//!   the allowed hours. Among overlapping freezes the one ending last is named.
//! - `next_window(at)` is the first instant `>= at` at which a normal (non-hotfix) deploy is allowed,
//!   at most 400 days after `at` (inclusive), else `None`; it is `at` itself when `at` is allowed, and
//!   [`Decision::next_window`] is this value for hotfix checks too. The search visits only the
//!   instants where the state can change (local midnights, allow-entry bounds, freeze ends), never
//!   stepping minute by minute.
//! - Instants in chat are shown as `Tue 1 Dec 10:00 EST` in the window's timezone; the year is added
//!   when the instant is more than 180 days away, so a date a year out is not mistaken for this year.
//!   Countdowns round up to the minute: `in 45m`, `in 3h 5m`, `in 2d 3h`, `now`.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta,
    TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How far ahead `next_window` looks (the contract's 400 days).
const SEARCH_DAYS: i64 = 400;
const MAX_MONTH_END_DAYS: u32 = 15;
const MINUTES_PER_DAY: u32 = 24 * 60;

// ---------------------------------------------------------------------------------------------
// Raw configuration, as the config loader deserializes it
// ---------------------------------------------------------------------------------------------

/// `[environments.X.window]` as written in the TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub timezone: String,
    #[serde(default)]
    pub allow: Vec<AllowConfig>,
    #[serde(default)]
    pub month_end_days: u32,
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default)]
    pub freeze: Vec<FreezeConfig>,
}

/// One `allow` entry: missing `days` means every day, missing `hours` the whole day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    #[serde(default)]
    pub days: Option<String>,
    #[serde(default)]
    pub hours: Option<String>,
}

/// One `freeze` entry: `[start, end)` between occurrences of two cron expressions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether hotfixes may still deploy during the freeze.
    #[serde(default = "hotfix_allowed_by_default")]
    pub hotfix: bool,
}

fn hotfix_allowed_by_default() -> bool {
    true
}

/// A mistake in a window config: `path` is relative to the window table (`allow[0].days`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfigError {
    pub path: String,
    pub message: String,
}

impl PolicyConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for PolicyConfigError {}

// ---------------------------------------------------------------------------------------------
// Validated window
// ---------------------------------------------------------------------------------------------

/// A validated deployment window.
#[derive(Debug, Clone)]
pub struct Window {
    tz: Tz,
    allow: Vec<AllowRule>,
    month_end_days: u32,
    holidays: Vec<Holiday>,
    freezes: Vec<Freeze>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AllowRule {
    days: DaySet,
    /// Minutes after local midnight; `end` may be 1440 (24:00).
    start: u32,
    end: u32,
}

/// Weekdays as bits, bit 0 = Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DaySet(u8);

impl DaySet {
    const ALL: DaySet = DaySet(0x7f);

    fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holiday {
    Once(NaiveDate),
    Yearly { month: u32, day: u32 },
}

impl Holiday {
    fn matches(self, date: NaiveDate) -> bool {
        match self {
            Holiday::Once(d) => d == date,
            Holiday::Yearly { month, day } => date.month() == month && date.day() == day,
        }
    }
}

#[derive(Debug, Clone)]
struct Freeze {
    start: CronExpr,
    end: CronExpr,
    reason: Option<String>,
    hotfix: bool,
}

impl Freeze {
    fn name(&self) -> &str {
        self.reason.as_deref().unwrap_or("freeze")
    }

    /// `Some(until)` when frozen at `t`; `until` is `None` when no end ever follows the start.
    fn frozen_at(&self, tz: Tz, t: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
        let start = self.start.latest_at_or_before(tz, t)?;
        match self.end.next_after(tz, start) {
            Some(end) if end <= t => None,
            until => Some(until),
        }
    }
}

impl Window {
    /// Validates a raw window config, reporting every mistake found, not just the first.
    pub fn from_config(c: &WindowConfig) -> Result<Window, Vec<PolicyConfigError>> {
        let mut errors = Vec::new();

        let tz = match parse_timezone(&c.timezone) {
            Ok(tz) => Some(tz),
            Err(message) => {
                errors.push(PolicyConfigError::new("timezone", message));
                None
            }
        };

        let mut allow = Vec::with_capacity(c.allow.len());
        for (i, entry) in c.allow.iter().enumerate() {
            let days = entry.days.as_deref().map(parse_days).transpose();
            let hours = entry.hours.as_deref().map(parse_hours).transpose();
            match (days, hours) {
                (Ok(days), Ok(hours)) => {
                    let (start, end) = hours.unwrap_or((0, MINUTES_PER_DAY));
                    let days = days.unwrap_or(DaySet::ALL);
                    allow.push(AllowRule { days, start, end });
                }
                (days, hours) => {
                    if let Err(message) = days {
                        errors.push(PolicyConfigError::new(format!("allow[{i}].days"), message));
                    }
                    if let Err(message) = hours {
                        errors.push(PolicyConfigError::new(format!("allow[{i}].hours"), message));
                    }
                }
            }
        }

        if c.month_end_days > MAX_MONTH_END_DAYS {
            errors.push(PolicyConfigError::new(
                "month_end_days",
                format!(
                    "{} is out of range (0 to {MAX_MONTH_END_DAYS} days)",
                    c.month_end_days
                ),
            ));
        }

        let mut holidays = Vec::with_capacity(c.holidays.len());
        for (i, text) in c.holidays.iter().enumerate() {
            match parse_holiday(text) {
                Ok(h) => holidays.push(h),
                Err(message) => {
                    errors.push(PolicyConfigError::new(format!("holidays[{i}]"), message))
                }
            }
        }

        let mut freezes = Vec::with_capacity(c.freeze.len());
        for (i, f) in c.freeze.iter().enumerate() {
            let start = CronExpr::parse(&f.start)
                .map_err(|m| errors.push(PolicyConfigError::new(format!("freeze[{i}].start"), m)));
            let end = CronExpr::parse(&f.end)
                .map_err(|m| errors.push(PolicyConfigError::new(format!("freeze[{i}].end"), m)));
            if let (Ok(start), Ok(end)) = (start, end) {
                if start.canonical == end.canonical {
                    errors.push(PolicyConfigError::new(
                        format!("freeze[{i}].end"),
                        format!(
                            "\"{}\" is the same schedule as the start, so the freeze would never end",
                            f.end
                        ),
                    ));
                    continue;
                }
                let reason = f
                    .reason
                    .as_deref()
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned);
                freezes.push(Freeze {
                    start,
                    end,
                    reason,
                    hotfix: f.hotfix,
                });
            }
        }

        match tz {
            Some(tz) if errors.is_empty() => Ok(Window {
                tz,
                allow,
                month_end_days: c.month_end_days,
                holidays,
                freezes,
            }),
            _ => Err(errors),
        }
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    fn day_start(&self, day: NaiveDate) -> DateTime<Utc> {
        resolve_local(self.tz, day.and_time(NaiveTime::MIN))
    }

    fn day_closure(&self, day: NaiveDate) -> Option<Denial> {
        if self.holidays.iter().any(|h| h.matches(day)) {
            return Some(Denial::Holiday(day));
        }
        if self.month_end_days > 0 && day.day() + self.month_end_days > days_in_month(day) {
            return Some(Denial::MonthEnd(self.month_end_days));
        }
        None
    }

    /// The allowed intervals of one local day, before denials: sorted, disjoint, non-empty.
    fn open_intervals(&self, day: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let at_minute = |minute: u32| -> Option<DateTime<Utc>> {
            if minute >= MINUTES_PER_DAY {
                let next = day.checked_add_days(Days::new(1))?;
                Some(self.day_start(next))
            } else {
                let time = NaiveTime::from_hms_opt(minute / 60, minute % 60, 0)?;
                Some(resolve_local(self.tz, day.and_time(time)))
            }
        };
        let whole_day = [AllowRule {
            days: DaySet::ALL,
            start: 0,
            end: MINUTES_PER_DAY,
        }];
        let rules: &[AllowRule] = if self.allow.is_empty() {
            &whole_day
        } else {
            &self.allow
        };
        let mut intervals: Vec<_> = rules
            .iter()
            .filter(|r| r.days.contains(day.weekday()))
            .filter_map(|r| Some((at_minute(r.start)?, at_minute(r.end)?)))
            .filter(|(start, end)| start < end)
            .collect();
        intervals.sort();
        let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// Active freezes at `t` with the instant each ends (`None`: never).
    fn active_freezes(&self, t: DateTime<Utc>) -> Vec<(&Freeze, Option<DateTime<Utc>>)> {
        self.freezes
            .iter()
            .filter_map(|f| f.frozen_at(self.tz, t).map(|until| (f, until)))
            .collect()
    }

    /// `None` when no freeze is active at `t`, else when the last active one ends (`Some(None)`: never).
    fn frozen_until(&self, t: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
        let mut result: Option<Option<DateTime<Utc>>> = None;
        for (_, until) in self.active_freezes(t) {
            result = Some(match (result, until) {
                (None, until) => until,
                (Some(Some(a)), Some(b)) => Some(a.max(b)),
                _ => None,
            });
        }
        result
    }

    fn next_open(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let horizon = at.checked_add_signed(TimeDelta::days(SEARCH_DAYS))?;
        let mut cursor = at;
        let mut day = self.local_date(at);
        while self.day_start(day) <= horizon {
            if self.day_closure(day).is_none() {
                for (start, end) in self.open_intervals(day) {
                    let mut candidate = start.max(cursor);
                    while candidate < end {
                        if candidate > horizon {
                            return None;
                        }
                        match self.frozen_until(candidate) {
                            None => return Some(candidate),
                            Some(None) => return None,
                            Some(Some(until)) => {
                                candidate = until;
                                cursor = cursor.max(until);
                            }
                        }
                    }
                }
            }
            let next = day.checked_add_days(Days::new(1))?;
            day = next.max(self.local_date(cursor));
        }
        None
    }

    /// Why a normal deploy is denied at `at`, by precedence; `None` when allowed.
    fn denial(
        &self,
        at: DateTime<Utc>,
        freezes: &[(&Freeze, Option<DateTime<Utc>>)],
    ) -> Option<Denial> {
        let latest_ending = freezes
            .iter()
            .max_by_key(|(_, until)| until.map_or(i64::MAX, |u| u.timestamp()));
        if let Some((freeze, until)) = latest_ending {
            return Some(Denial::Freeze {
                name: freeze.name().to_owned(),
                until: *until,
            });
        }
        let day = self.local_date(at);
        if let Some(closure) = self.day_closure(day) {
            return Some(closure);
        }
        let in_hours = self
            .open_intervals(day)
            .iter()
            .any(|(start, end)| *start <= at && at < *end);
        if in_hours {
            None
        } else {
            Some(Denial::OutsideHours)
        }
    }

    /// `Tue–Wed 10:00–14:00 America/New_York`
    fn summary(&self) -> String {
        let entries = if self.allow.is_empty() {
            "every day".to_owned()
        } else {
            self.allow
                .iter()
                .map(|r| describe_rule(*r))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("{entries} {}", self.tz.name())
    }

    fn describe(&self) -> String {
        // "closed on holidays, the last 3 days of each month and during 1 freeze"
        let mut closed = Vec::new();
        if !self.holidays.is_empty() {
            closed.push("holidays".to_owned());
        }
        match self.month_end_days {
            0 => {}
            1 => closed.push("the last day of each month".to_owned()),
            n => closed.push(format!("the last {n} days of each month")),
        }
        if let Some(first) = closed.first_mut() {
            *first = format!("on {first}");
        }
        match self.freezes.len() {
            0 => {}
            1 => closed.push("during 1 freeze".to_owned()),
            n => closed.push(format!("during {n} freezes")),
        }
        let summary = self.summary();
        match closed.split_last() {
            None => summary,
            Some((last, [])) => format!("{summary}; closed {last}"),
            Some((last, rest)) => format!("{summary}; closed {} and {last}", rest.join(", ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Denial {
    Freeze {
        name: String,
        until: Option<DateTime<Utc>>,
    },
    Holiday(NaiveDate),
    MonthEnd(u32),
    OutsideHours,
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// An environment's deployment-window policy: no window means always open.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    window: Option<Window>,
}

/// The answer to "may this deploy start at `at`?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// A sentence without a trailing period.
    pub reason: String,
    /// The first instant at or after `at` when a normal (non-hotfix) deploy is allowed, within 400 days.
    pub next_window: Option<DateTime<Utc>>,
}

impl Policy {
    pub fn always_open() -> Policy {
        Policy { window: None }
    }

    pub fn new(window: Window) -> Policy {
        Policy {
            window: Some(window),
        }
    }

    /// Validates an environment's optional `[window]` table.
    pub fn from_config(config: Option<&WindowConfig>) -> Result<Policy, Vec<PolicyConfigError>> {
        Ok(Policy {
            window: config.map(Window::from_config).transpose()?,
        })
    }

    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    pub fn timezone(&self) -> Option<Tz> {
        self.window.as_ref().map(Window::timezone)
    }

    pub fn check(&self, at: DateTime<Utc>, hotfix: bool) -> Decision {
        let Some(window) = &self.window else {
            return Decision {
                allowed: true,
                reason: "no deployment window: always open".to_owned(),
                next_window: Some(at),
            };
        };
        let tz = window.tz;
        let next_window = window.next_open(at);
        let freezes = window.active_freezes(at);
        let decision = |allowed: bool, reason: String| Decision {
            allowed,
            reason,
            next_window,
        };

        if hotfix {
            if let Some((freeze, _)) = freezes.iter().find(|(f, _)| !f.hotfix) {
                return decision(
                    false,
                    format!("hotfix not allowed during {}", freeze.name()),
                );
            }
        }
        match window.denial(at, &freezes) {
            None => decision(
                true,
                format!("inside the deployment window ({})", window.summary()),
            ),
            Some(denial) if hotfix => {
                let context = match denial {
                    Denial::Freeze { name, .. } => format!("during {name}"),
                    Denial::Holiday(day) => format!("on a holiday ({day})"),
                    Denial::MonthEnd(_) => "during month-end".to_owned(),
                    Denial::OutsideHours => "outside the deployment window".to_owned(),
                };
                decision(true, format!("hotfix allowed {context}"))
            }
            Some(denial) => {
                let reason = match denial {
                    Denial::Freeze {
                        name,
                        until: Some(until),
                    } => format!("{name} until {}", format_instant(until, at, tz)),
                    Denial::Freeze { name, until: None } => format!("{name} with no scheduled end"),
                    Denial::Holiday(day) => format!("{day} is a holiday"),
                    Denial::MonthEnd(1) => {
                        "month-end: the last day of the month is closed".to_owned()
                    }
                    Denial::MonthEnd(n) => {
                        format!("month-end: the last {n} days of the month are closed")
                    }
                    Denial::OutsideHours => {
                        format!("outside the deployment window ({})", window.summary())
                    }
                };
                decision(false, reason)
            }
        }
    }

    pub fn next_window(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.window {
            None => Some(at),
            Some(window) => window.next_open(at),
        }
    }

    /// For `/window`: `Tue–Wed 10:00–14:00 America/New_York; closed on holidays, ...`.
    pub fn describe(&self) -> String {
        match &self.window {
            None => "always open".to_owned(),
            Some(window) => window.describe(),
        }
    }
}

/// `Tue 1 Dec 10:00 EST, in 2d 3h`: `next` in `tz` and how long until it from `now`.
pub fn format_next_window(next: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> String {
    format!(
        "{}, {}",
        format_instant(next, now, tz),
        format_until(next, now)
    )
}

/// `Tue 1 Dec 10:00 EST`, with the year when `t` is more than 180 days from `now`.
fn format_instant(t: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz);
    let far = (t - now).num_days().abs() > 180;
    if far {
        local.format("%a %-d %b %Y %H:%M %Z").to_string()
    } else {
        local.format("%a %-d %b %H:%M %Z").to_string()
    }
}

/// `in 45m`, `in 3h 5m`, `in 2d 3h`, `now`; partial minutes round up so "in 0m" never appears.
fn format_until(next: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = next - now;
    if delta <= TimeDelta::zero() {
        return "now".to_owned();
    }
    let seconds = delta.num_seconds() + i64::from(delta.subsec_nanos() > 0);
    let minutes = (seconds + 59) / 60;
    let (days, hours, mins) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    match (days, hours, mins) {
        (0, 0, m) => format!("in {m}m"),
        (0, h, 0) => format!("in {h}h"),
        (0, h, m) => format!("in {h}h {m}m"),
        (d, 0, _) => format!("in {d}d"),
        (d, h, _) => format!("in {d}d {h}h"),
    }
}

// ---------------------------------------------------------------------------------------------
// Local time
// ---------------------------------------------------------------------------------------------

/// The instant of a local wall-clock time: a skipped time gives the first instant after the gap,
/// a repeated time the earliest of its instants.
fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earliest, _) => earliest.with_timezone(&Utc),
        LocalResult::None => first_instant_at_or_after_wall(tz, local),
    }
}

/// Binary search for the first instant whose wall-clock time is `>= local`: wall time is monotone
/// for a day around any gap in every real zone, and UTC offsets stay well within ±30 hours.
fn first_instant_at_or_after_wall(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let wall =
        |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local());
    let guess = local.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - 30 * 3600, guess + 30 * 3600);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match wall(mid) {
            Some(w) if w >= local => hi = mid,
            _ => lo = mid,
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or_else(|| local.and_utc())
}

fn wall_clock(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    let local = t.with_timezone(&tz).naive_local();
    local.with_nanosecond(0).unwrap_or(local)
}

fn days_in_month(day: NaiveDate) -> u32 {
    let (year, month) = (day.year(), day.month());
    let first_of_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    first_of_next
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

// ---------------------------------------------------------------------------------------------
// Cron
// ---------------------------------------------------------------------------------------------

/// Parses a standard 5-field cron expression (see the module doc); the error is a complete
/// message such as `invalid cron expression "0 18 32 12 *": day of month 32 out of range (1-31)`.
pub fn parse_cron(text: &str) -> Result<CronExpr, String> {
    CronExpr::parse(text)
}

/// A standard 5-field cron expression, evaluated on wall-clock time in a timezone given per query.
#[derive(Debug, Clone)]
pub struct CronExpr {
    source: String,
    /// The matched sets, for comparing two expressions regardless of spelling.
    canonical: String,
    /// One schedule, or two whose union is the expression (day of month OR day of week).
    schedules: Vec<cron::Schedule>,
}

struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTE: CronField = CronField {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: CronField = CronField {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: CronField = CronField {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: CronField = CronField {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
        ("january", 1),
        ("february", 2),
        ("march", 3),
        ("april", 4),
        ("june", 6),
        ("july", 7),
        ("august", 8),
        ("september", 9),
        ("october", 10),
        ("november", 11),
        ("december", 12),
    ],
};
const DAY_OF_WEEK: CronField = CronField {
    name: "day of week",
    min: 0,
    max: 7,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
        ("sunday", 0),
        ("monday", 1),
        ("tuesday", 2),
        ("wednesday", 3),
        ("thursday", 4),
        ("friday", 5),
        ("saturday", 6),
    ],
};

impl CronField {
    /// The values a field matches, as bits.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!(
                    "{} field \"{text}\" has an empty list entry",
                    self.name
                ));
            }
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => match step.parse::<u32>() {
                    Ok(step) if step > 0 => (base, Some(step)),
                    _ => {
                        return Err(format!(
                            "{} step \"{step}\" must be a whole number of at least 1",
                            self.name
                        ))
                    }
                },
                None => (item, None),
            };
            let (lo, hi) = if base == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = base.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{} range \"{base}\" runs backwards (cron ranges do not wrap)",
                        self.name
                    ));
                }
                (a, b)
            } else {
                let v = self.value(base)?;
                (v, if step.is_some() { self.max } else { v })
            };
            for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }

    fn value(&self, text: &str) -> Result<u32, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => Err(format!(
                    "{} {text} out of range ({}-{})",
                    self.name, self.min, self.max
                )),
            };
        }
        let lower = text.to_ascii_lowercase();
        if let Some((_, v)) = self.names.iter().find(|(n, _)| *n == lower) {
            return Ok(*v);
        }
        if self.names.is_empty() {
            Err(format!("{} \"{text}\" is not a number", self.name))
        } else {
            Err(format!(
                "{} \"{text}\" is not a number or a name",
                self.name
            ))
        }
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl CronExpr {
    pub fn parse(source: &str) -> Result<CronExpr, String> {
        Self::parse_fields(source.trim())
            .map(|(canonical, schedules)| CronExpr {
                source: source.trim().to_owned(),
                canonical,
                schedules,
            })
            .map_err(|detail| format!("invalid cron expression \"{source}\": {detail}"))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The canonical form (the matched sets) and the crate schedules whose union is the expression.
    fn parse_fields(source: &str) -> Result<(String, Vec<cron::Schedule>), String> {
        let expanded = match source.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(
                    "unknown shorthand (use @yearly, @monthly, @weekly, @daily or @hourly)"
                        .to_owned(),
                )
            }
            _ => source,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        };
        let minutes = MINUTE.parse(minute)?;
        let hours = HOUR.parse(hour)?;
        let doms = DAY_OF_MONTH.parse(dom)?;
        let months = MONTH.parse(month)?;
        let dows = DAY_OF_WEEK.parse(dow)?;
        // Standard cron: 7 is Sunday too.
        let dows = (dows | (dows >> 7)) & 0x7f;

        let possible = (1..=12u32).filter(|m| months & (1 << m) != 0).any(|m| {
            let longest = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
            (1..=longest).any(|d| doms & (1 << d) != 0)
        });
        let dom_star = dom.starts_with('*');
        let dow_star = dow.starts_with('*');
        let either_day_matches = !dom_star && !dow_star;
        if !possible && !either_day_matches {
            return Err("that day of month never occurs in the months given".to_owned());
        }

        let all_days_of_month = bits_between(1, 31);
        let all_days_of_week = 0x7f;
        let halves = if either_day_matches {
            vec![(doms, all_days_of_week), (all_days_of_month, dows)]
        } else {
            vec![(doms, dows)]
        };
        let schedules = halves
            .into_iter()
            .map(|(doms, dows)| {
                // The cron crate wants seconds first and numbers Sunday 1 through Saturday 7.
                let crate_dows = (0..7)
                    .filter(|d| dows & (1 << d) != 0)
                    .fold(0u64, |acc, d| acc | 1 << (d + 1));
                let expression = format!(
                    "0 {} {} {} {} {}",
                    crate_list(minutes, bits_between(0, 59)),
                    crate_list(hours, bits_between(0, 23)),
                    crate_list(doms, all_days_of_month),
                    crate_list(months, bits_between(1, 12)),
                    crate_list(crate_dows, bits_between(1, 7)),
                );
                cron::Schedule::from_str(&expression).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let canonical =
            format!("{minutes:x} {hours:x} {doms:x} {months:x} {dows:x} {either_day_matches}");
        Ok((canonical, schedules))
    }

    /// The latest occurrence at or before local time `local` (whole seconds).
    fn prev_local_at_or_before(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let after = local.checked_add_signed(TimeDelta::seconds(1))?.and_utc();
        self.schedules
            .iter()
            .filter_map(|s| s.after(&after).next_back())
            .map(|t| t.naive_utc())
            .max()
    }

    /// The first occurrence strictly after local time `local`.
    fn next_local_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let after = local.and_utc();
        self.schedules
            .iter()
            .filter_map(|s| s.after(&after).next())
            .map(|t| t.naive_utc())
            .min()
    }

    /// The latest occurrence `<= t`, wall-clock times read in `tz`.
    pub fn latest_at_or_before(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = wall_clock(tz, t);
        let mut best = self
            .prev_local_at_or_before(local)
            .map(|l| resolve_local(tz, l));
        // After a fall-back, later wall-clock times can resolve to the earlier pass, before `t`.
        let mut cursor = local;
        while let Some(next) = self.next_local_after(cursor) {
            let instant = resolve_local(tz, next);
            if instant > t || next - local > TimeDelta::days(1) {
                break;
            }
            best = Some(instant);
            cursor = next;
        }
        best
    }

    /// The first occurrence `> t`, wall-clock times read in `tz`.
    pub fn next_after(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = wall_clock(tz, t);
        loop {
            let next = self.next_local_after(cursor)?;
            let instant = resolve_local(tz, next);
            if instant > t {
                return Some(instant);
            }
            cursor = next;
        }
    }
}

fn bits_between(lo: u32, hi: u32) -> u64 {
    (lo..=hi).fold(0, |acc, v| acc | 1 << v)
}

fn crate_list(bits: u64, all: u64) -> String {
    if bits == all {
        return "*".to_owned();
    }
    (0..64)
        .filter(|v| bits & (1u64 << v) != 0)
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// Parsing the other fields
// ---------------------------------------------------------------------------------------------

fn parse_timezone(name: &str) -> Result<Tz, String> {
    if let Ok(tz) = Tz::from_str(name.trim()) {
        return Ok(tz);
    }
    let wanted = name.trim().to_ascii_lowercase();
    match chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().to_ascii_lowercase() == wanted)
    {
        Some(tz) => Err(format!(
            "unknown timezone \"{name}\" (did you mean {}?)",
            tz.name()
        )),
        None => Err(format!(
            "unknown timezone \"{name}\" (IANA names like America/New_York)"
        )),
    }
}

const DAY_NAMES: [(&str, Weekday); 17] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
    ("tues", Weekday::Tue),
    ("thur", Weekday::Thu),
    ("thurs", Weekday::Thu),
];

fn parse_day(text: &str, whole: &str) -> Result<Weekday, String> {
    let lower = text.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, d)| *d)
        .ok_or_else(|| {
            format!(
                "days \"{whole}\": unknown day \"{}\" (use mon, tue, wed, thu, fri, sat or sun)",
                text.trim()
            )
        })
}

fn parse_days(text: &str) -> Result<DaySet, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!(
            "days \"{text}\": no days given (use e.g. \"tue-wed\", \"mon,wed,fri\" or \"*\")"
        ));
    }
    if trimmed == "*" {
        return Ok(DaySet::ALL);
    }
    let mut bits = 0u8;
    for item in trimmed.split(',') {
        if item.trim().is_empty() {
            return Err(format!("days \"{text}\": empty entry in the list"));
        }
        match item.split_once(['-', '–']) {
            Some((a, b)) => {
                let (first, last) = (parse_day(a, text)?, parse_day(b, text)?);
                let mut day = first;
                loop {
                    bits |= 1 << day.num_days_from_monday();
                    if day == last {
                        break;
                    }
                    day = day.succ();
                }
            }
            None => bits |= 1 << parse_day(item, text)?.num_days_from_monday(),
        }
    }
    Ok(DaySet(bits))
}

fn parse_hours(text: &str) -> Result<(u32, u32), String> {
    let shape = || format!("hours \"{text}\": expected HH:MM-HH:MM, like \"10:00-14:00\"");
    let (a, b) = text.trim().split_once(['-', '–']).ok_or_else(shape)?;
    let minute_of_day = |t: &str| -> Result<u32, String> {
        let (h, m) = t.trim().split_once(':').ok_or_else(shape)?;
        let digits = |s: &str, max_len: usize| {
            (!s.is_empty() && s.len() <= max_len && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let (Some(h), Some(m)) = (digits(h, 2), digits(m, 2).filter(|_| m.len() == 2)) else {
            return Err(shape());
        };
        if m > 59 || h > 24 || (h == 24 && m > 0) {
            return Err(format!(
                "hours \"{text}\": {} is not a time of day (00:00 to 24:00)",
                t.trim()
            ));
        }
        Ok(h * 60 + m)
    };
    let (start, end) = (minute_of_day(a)?, minute_of_day(b)?);
    if start == MINUTES_PER_DAY {
        return Err(format!("hours \"{text}\": 24:00 can only end a range"));
    }
    if end <= start {
        return Err(format!(
            "hours \"{text}\": the end must be after the start (use two entries to span midnight)"
        ));
    }
    Ok((start, end))
}

fn parse_holiday(text: &str) -> Result<Holiday, String> {
    let shape = || format!("holiday \"{text}\": expected YYYY-MM-DD or MM-DD");
    let parts: Vec<&str> = text.trim().split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let not_real = || format!("holiday \"{text}\" is not a real date");
    match parts[..] {
        [y, m, d] => {
            let (Some(y), Some(m), Some(d)) = (number(y, 4), number(m, 2), number(d, 2)) else {
                return Err(shape());
            };
            i32::try_from(y)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
                .map(Holiday::Once)
                .ok_or_else(not_real)
        }
        [m, d] => {
            let (Some(m), Some(d)) = (number(m, 2), number(d, 2)) else {
                return Err(shape());
            };
            // 2000 is a leap year, so 02-29 counts as real (it matches only in leap years).
            NaiveDate::from_ymd_opt(2000, m, d)
                .map(|_| Holiday::Yearly { month: m, day: d })
                .ok_or_else(not_real)
        }
        _ => Err(shape()),
    }
}

// ---------------------------------------------------------------------------------------------
// Describing rules
// ---------------------------------------------------------------------------------------------

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `Tue–Wed`, `Mon,Wed,Fri`, `Fri–Mon`, `every day`.
fn describe_days(days: DaySet) -> String {
    if days == DaySet::ALL {
        return "every day".to_owned();
    }
    let has = |i: usize| days.0 & (1 << (i % 7)) != 0;
    // Runs are read from a day not in the set, so a run across Sunday–Monday stays whole.
    let Some(origin) = (0..7).find(|i| !has(*i)) else {
        return "every day".to_owned();
    };
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for offset in 1..=7 {
        let i = (origin + offset) % 7;
        if !has(i) {
            continue;
        }
        match runs.last_mut() {
            Some((_, last)) if (*last + 1) % 7 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.sort();
    runs.iter()
        .map(|&(first, last)| {
            if first == last {
                SHORT_DAYS[first].to_owned()
            } else {
                format!("{}–{}", SHORT_DAYS[first], SHORT_DAYS[last])
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_rule(rule: AllowRule) -> String {
    let days = describe_days(rule.days);
    if rule.start == 0 && rule.end == MINUTES_PER_DAY {
        return days;
    }
    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    format!("{days} {}–{}", hhmm(rule.start), hhmm(rule.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NORMAL: bool = false;
    const HOTFIX: bool = true;
    const OPEN: bool = true;
    const CLOSED: bool = false;

    /// The runbook's production rule: Tue/Wed 10:00–14:00 New York, no month-end, holidays, year-end freeze.
    const PRODUCTION: &str = r#"
        timezone = "America/New_York"
        allow = [ { days = "tue-wed", hours = "10:00-14:00" } ]
        month_end_days = 3
        holidays = ["2026-06-30", "2026-11-26", "2026-12-01", "2026-12-25", "2027-01-01", "07-04"]
        freeze = [ { start = "0 18 20 12 *", end = "0 8 4 1 *", reason = "year-end freeze", hotfix = false } ]
    "#;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("bad test instant {s}: {e}"))
            .with_timezone(&Utc)
    }

    fn config(toml_text: &str) -> WindowConfig {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad test config: {e}"))
    }

    fn policy(toml_text: &str) -> Policy {
        match Window::from_config(&config(toml_text)) {
            Ok(w) => Policy::new(w),
            Err(errors) => panic!("test config rejected: {errors:?}"),
        }
    }

    fn errors_of(toml_text: &str) -> Vec<(String, String)> {
        match Window::from_config(&config(toml_text)) {
            Ok(_) => panic!("config was accepted"),
            Err(errors) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    type Row = (&'static str, &'static str, bool, bool, Option<&'static str>);

    /// Rows of (what, instant, hotfix, expected allowed, expected next_window).
    fn check_table(policy: &Policy, rows: &[Row]) {
        let mut failures = Vec::new();
        for &(what, at, hotfix, allowed, next) in rows {
            let decision = policy.check(utc(at), hotfix);
            let expected_next = next.map(utc);
            if decision.allowed != allowed || decision.next_window != expected_next {
                failures.push(format!(
                    "{what} ({at}, hotfix={hotfix}): expected allowed={allowed} next={expected_next:?}, got {decision:?}"
                ));
            }
            assert_eq!(policy.next_window(utc(at)), decision.next_window, "{what}");
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    fn reason_table(policy: &Policy, rows: &[(&str, bool, &str)]) {
        let mut failures = Vec::new();
        for &(at, hotfix, reason) in rows {
            let decision = policy.check(utc(at), hotfix);
            if decision.reason != reason {
                failures.push(format!(
                    "{at} hotfix={hotfix}: expected {reason:?}, got {:?}",
                    decision.reason
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn the_calendar_facts_the_tables_rely_on_hold() {
        let weekday = |d: &str| {
            NaiveDate::from_str(d)
                .unwrap_or_else(|e| panic!("{d}: {e}"))
                .weekday()
        };
        for (day, expected) in [
            ("2026-12-01", Weekday::Tue),
            ("2026-09-29", Weekday::Tue),
            ("2026-09-30", Weekday::Wed),
            ("2026-03-31", Weekday::Tue),
            ("2026-06-30", Weekday::Tue),
            ("2028-02-29", Weekday::Tue),
            ("2028-07-04", Weekday::Tue),
            ("2026-12-20", Weekday::Sun),
            ("2027-01-04", Weekday::Mon),
            ("2026-11-01", Weekday::Sun),
            ("2027-03-14", Weekday::Sun),
        ] {
            assert_eq!(weekday(day), expected, "{day}");
        }
        let ny = chrono_tz::America::New_York;
        let offset = |t: &str| utc(t).with_timezone(&ny).format("%Z").to_string();
        assert_eq!(offset("2026-11-01T05:59:59Z"), "EDT");
        assert_eq!(offset("2026-11-01T06:00:00Z"), "EST");
        assert_eq!(offset("2027-03-14T06:59:59Z"), "EST");
        assert_eq!(offset("2027-03-14T07:00:00Z"), "EDT");
    }

    #[test]
    #[rustfmt::skip]
    fn the_production_rule_follows_the_runbook_calendar() {
        check_table(
            &policy(PRODUCTION),
            &[
                ("Tue 10:00:00 EST opens", "2026-11-10T15:00:00Z", NORMAL, OPEN, Some("2026-11-10T15:00:00Z")),
                ("Tue 09:59:59 is a second early", "2026-11-10T14:59:59Z", NORMAL, CLOSED, Some("2026-11-10T15:00:00Z")),
                ("Tue 13:59:59 is still open", "2026-11-10T18:59:59Z", NORMAL, OPEN, Some("2026-11-10T18:59:59Z")),
                ("Tue 14:00:00 is closed", "2026-11-10T19:00:00Z", NORMAL, CLOSED, Some("2026-11-11T15:00:00Z")),
                ("sub-second instants stay exact", "2026-11-10T14:59:59.250Z", NORMAL, CLOSED, Some("2026-11-10T15:00:00Z")),
                ("Wed noon is open", "2026-11-11T17:00:00Z", NORMAL, OPEN, Some("2026-11-11T17:00:00Z")),
                ("Wed 14:00 waits for next Tuesday", "2026-11-11T19:00:00Z", NORMAL, CLOSED, Some("2026-11-17T15:00:00Z")),
                ("Thursday is closed", "2026-11-12T16:00:00Z", NORMAL, CLOSED, Some("2026-11-17T15:00:00Z")),
                ("Friday is closed", "2026-11-13T16:00:00Z", NORMAL, CLOSED, Some("2026-11-17T15:00:00Z")),
                ("Saturday is closed", "2026-11-14T16:00:00Z", NORMAL, CLOSED, Some("2026-11-17T15:00:00Z")),
                ("Sunday is closed", "2026-11-15T16:00:00Z", NORMAL, CLOSED, Some("2026-11-17T15:00:00Z")),
                ("Monday evening local is Tuesday in UTC", "2026-11-17T01:00:00Z", NORMAL, CLOSED, Some("2026-11-17T15:00:00Z")),
                ("a hotfix on a Friday is allowed", "2026-11-13T16:00:00Z", HOTFIX, OPEN, Some("2026-11-17T15:00:00Z")),
                ("a hotfix inside the window is allowed", "2026-11-10T15:00:00Z", HOTFIX, OPEN, Some("2026-11-10T15:00:00Z")),
                // 2026-12-01 is a Tuesday holiday.
                ("a Tuesday holiday is closed", "2026-12-01T16:00:00Z", NORMAL, CLOSED, Some("2026-12-02T15:00:00Z")),
                ("a Tuesday holiday allows a hotfix", "2026-12-01T16:00:00Z", HOTFIX, OPEN, Some("2026-12-02T15:00:00Z")),
                // Thanksgiving 2026-11-26 is a Thursday: no effect on Tue/Wed.
                ("the Tuesday before Thanksgiving is open", "2026-11-24T15:00:00Z", NORMAL, OPEN, Some("2026-11-24T15:00:00Z")),
                // September 2026: the 28th (Mon), 29th (Tue) and 30th (Wed) are month-end.
                ("the Tuesday before month-end is open", "2026-09-22T14:00:00Z", NORMAL, OPEN, Some("2026-09-22T14:00:00Z")),
                ("a month-end Tuesday is closed", "2026-09-29T15:00:00Z", NORMAL, CLOSED, Some("2026-10-06T14:00:00Z")),
                ("a month-end Wednesday is closed", "2026-09-30T15:00:00Z", NORMAL, CLOSED, Some("2026-10-06T14:00:00Z")),
                ("a month-end Tuesday allows a hotfix", "2026-09-29T15:00:00Z", HOTFIX, OPEN, Some("2026-10-06T14:00:00Z")),
                // March 2026: 31st is a Tuesday, within the last 3 days.
                ("the 31st of March 2026 is month-end", "2026-03-31T15:00:00Z", NORMAL, CLOSED, Some("2026-04-01T14:00:00Z")),
                // Leap February 2028: the 29th is a Tuesday and month-end.
                ("29 Feb 2028 is month-end", "2028-02-29T16:00:00Z", NORMAL, CLOSED, Some("2028-03-01T15:00:00Z")),
                // Yearly 07-04: a Tuesday in 2028.
                ("a yearly holiday on a Tuesday is closed", "2028-07-04T15:00:00Z", NORMAL, CLOSED, Some("2028-07-05T14:00:00Z")),
                // 2026-06-30 is a Tuesday, a holiday and month-end.
                ("a holiday on a month-end day is closed", "2026-06-30T15:00:00Z", NORMAL, CLOSED, Some("2026-07-01T14:00:00Z")),
                // The year-end freeze: Sun 20 Dec 2026 18:00 EST (23:00Z) to Mon 4 Jan 2027 08:00 EST (13:00Z).
                ("a second before the freeze", "2026-12-20T22:59:59Z", NORMAL, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a hotfix a second before the freeze", "2026-12-20T22:59:59Z", HOTFIX, OPEN, Some("2027-01-05T15:00:00Z")),
                ("the freeze's exact start", "2026-12-20T23:00:00Z", HOTFIX, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a Tuesday inside the freeze", "2026-12-22T16:00:00Z", NORMAL, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a hotfix inside the freeze", "2026-12-22T16:00:00Z", HOTFIX, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a hotfix on Christmas", "2026-12-25T17:00:00Z", HOTFIX, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a hotfix across New Year", "2027-01-01T05:00:00Z", HOTFIX, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a hotfix a second before the freeze ends", "2027-01-04T12:59:59Z", HOTFIX, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("a hotfix at the freeze's exact end", "2027-01-04T13:00:00Z", HOTFIX, OPEN, Some("2027-01-05T15:00:00Z")),
                ("the freeze's end is a Monday", "2027-01-04T13:00:00Z", NORMAL, CLOSED, Some("2027-01-05T15:00:00Z")),
                ("the first window after the freeze", "2027-01-05T15:00:00Z", NORMAL, OPEN, Some("2027-01-05T15:00:00Z")),
                ("the next year's freeze", "2027-12-21T16:00:00Z", NORMAL, CLOSED, Some("2028-01-04T15:00:00Z")),
                // US DST ends Sun 1 Nov 2026: 10:00 is 14:00Z before, 15:00Z after.
                ("10:00 EDT the week before", "2026-10-27T14:00:00Z", NORMAL, OPEN, Some("2026-10-27T14:00:00Z")),
                ("14:30 EDT the week before", "2026-10-27T18:30:00Z", NORMAL, CLOSED, Some("2026-10-28T14:00:00Z")),
                ("Wed 14:00 EDT jumps to 10:00 EST", "2026-10-28T18:00:00Z", NORMAL, CLOSED, Some("2026-11-03T15:00:00Z")),
                ("09:00 EST the week after", "2026-11-03T14:00:00Z", NORMAL, CLOSED, Some("2026-11-03T15:00:00Z")),
                ("09:30 EST is not 10:30", "2026-11-03T14:30:00Z", NORMAL, CLOSED, Some("2026-11-03T15:00:00Z")),
                ("13:30 EST the week after", "2026-11-03T18:30:00Z", NORMAL, OPEN, Some("2026-11-03T18:30:00Z")),
                // US DST starts Sun 14 Mar 2027.
                ("Wed 14:00 EST jumps to 10:00 EDT", "2027-03-10T19:00:00Z", NORMAL, CLOSED, Some("2027-03-16T14:00:00Z")),
                ("09:59:59 EDT", "2027-03-16T13:59:59Z", NORMAL, CLOSED, Some("2027-03-16T14:00:00Z")),
                ("10:00 EDT", "2027-03-16T14:00:00Z", NORMAL, OPEN, Some("2027-03-16T14:00:00Z")),
                ("14:00 EDT", "2027-03-16T18:00:00Z", NORMAL, CLOSED, Some("2027-03-17T14:00:00Z")),
            ],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn production_reasons_name_the_denial_by_precedence() {
        reason_table(
            &policy(PRODUCTION),
            &[
                ("2026-11-10T15:00:00Z", NORMAL, "inside the deployment window (Tue–Wed 10:00–14:00 America/New_York)"),
                ("2026-11-10T15:00:00Z", HOTFIX, "inside the deployment window (Tue–Wed 10:00–14:00 America/New_York)"),
                ("2026-11-13T16:00:00Z", NORMAL, "outside the deployment window (Tue–Wed 10:00–14:00 America/New_York)"),
                ("2026-11-13T16:00:00Z", HOTFIX, "hotfix allowed outside the deployment window"),
                ("2026-12-01T16:00:00Z", NORMAL, "2026-12-01 is a holiday"),
                ("2026-12-01T16:00:00Z", HOTFIX, "hotfix allowed on a holiday (2026-12-01)"),
                // Local date, not UTC date: 2026-12-02T02:00Z is still 1 Dec in New York.
                ("2026-12-02T02:00:00Z", NORMAL, "2026-12-01 is a holiday"),
                ("2026-09-29T15:00:00Z", NORMAL, "month-end: the last 3 days of the month are closed"),
                ("2026-09-29T15:00:00Z", HOTFIX, "hotfix allowed during month-end"),
                ("2026-06-30T15:00:00Z", NORMAL, "2026-06-30 is a holiday"),
                ("2026-12-22T16:00:00Z", NORMAL, "year-end freeze until Mon 4 Jan 08:00 EST"),
                ("2026-12-22T16:00:00Z", HOTFIX, "hotfix not allowed during year-end freeze"),
                // Freeze beats month-end and holiday.
                ("2026-12-29T16:00:00Z", NORMAL, "year-end freeze until Mon 4 Jan 08:00 EST"),
                ("2026-12-25T16:00:00Z", NORMAL, "year-end freeze until Mon 4 Jan 08:00 EST"),
            ],
        );
    }

    #[test]
    fn the_production_rule_describes_itself_for_the_window_command() {
        let p = policy(PRODUCTION);
        assert_eq!(
            p.describe(),
            "Tue–Wed 10:00–14:00 America/New_York; closed on holidays, the last 3 days of each month and during 1 freeze"
        );
        assert_eq!(p.timezone(), Some(chrono_tz::America::New_York));
    }

    #[test]
    fn a_policy_without_a_window_is_always_open() {
        let p = Policy::always_open();
        for at in [
            "2026-12-25T12:00:00Z",
            "2026-11-14T03:00:00Z",
            "2027-01-01T00:00:00.5Z",
        ] {
            for hotfix in [NORMAL, HOTFIX] {
                let d = p.check(utc(at), hotfix);
                assert!(d.allowed);
                assert_eq!(d.next_window, Some(utc(at)));
                assert_eq!(d.reason, "no deployment window: always open");
            }
        }
        assert_eq!(p.describe(), "always open");
        assert_eq!(p.timezone(), None);
        assert!(Policy::from_config(None).is_ok_and(|p| p.window().is_none()));
    }

    #[test]
    #[rustfmt::skip]
    fn a_window_without_allow_entries_is_open_every_day_except_denials() {
        let p = policy(
            r#"
            timezone = "Europe/Berlin"
            holidays = ["12-24", "12-25", "12-26"]
            freeze = [ { start = "0 16 * * fri", end = "0 6 * * mon", reason = "weekend freeze" } ]
            "#,
        );
        check_table(
            &p,
            &[
                ("Wed midday", "2026-12-02T11:00:00Z", NORMAL, OPEN, Some("2026-12-02T11:00:00Z")),
                ("Thu 00:30 local", "2026-12-02T23:30:00Z", NORMAL, OPEN, Some("2026-12-02T23:30:00Z")),
                ("Fri 15:59:59 CET", "2026-12-04T14:59:59Z", NORMAL, OPEN, Some("2026-12-04T14:59:59Z")),
                ("Fri 16:00 CET starts the freeze", "2026-12-04T15:00:00Z", NORMAL, CLOSED, Some("2026-12-07T05:00:00Z")),
                ("a hotfix on Saturday (freeze allows hotfixes by default)", "2026-12-05T12:00:00Z", HOTFIX, OPEN, Some("2026-12-07T05:00:00Z")),
                ("Mon 05:59:59 CET", "2026-12-07T04:59:59Z", NORMAL, CLOSED, Some("2026-12-07T05:00:00Z")),
                ("Mon 06:00 CET ends the freeze", "2026-12-07T05:00:00Z", NORMAL, OPEN, Some("2026-12-07T05:00:00Z")),
                // Thu 24 and Fri 25 are holidays, then the weekend freeze runs to Mon 28 06:00.
                ("Christmas Eve", "2026-12-24T10:00:00Z", NORMAL, CLOSED, Some("2026-12-28T05:00:00Z")),
                ("Wed 23 Dec 23:59:59 local", "2026-12-23T22:59:59Z", NORMAL, OPEN, Some("2026-12-23T22:59:59Z")),
                ("Thu 24 Dec 00:00 local", "2026-12-23T23:00:00Z", NORMAL, CLOSED, Some("2026-12-28T05:00:00Z")),
            ],
        );
        reason_table(
            &p,
            &[
                ("2026-12-02T11:00:00Z", NORMAL, "inside the deployment window (every day Europe/Berlin)"),
                ("2026-12-05T12:00:00Z", NORMAL, "weekend freeze until Mon 7 Dec 06:00 CET"),
                ("2026-12-05T12:00:00Z", HOTFIX, "hotfix allowed during weekend freeze"),
                ("2026-12-24T10:00:00Z", NORMAL, "2026-12-24 is a holiday"),
            ],
        );
        assert_eq!(
            p.describe(),
            "every day Europe/Berlin; closed on holidays and during 1 freeze"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn a_european_window_follows_its_own_dst_change() {
        // Berlin leaves summer time on Sun 25 Oct 2026: 08:00 is 06:00Z before, 07:00Z after.
        let p = policy(
            r#"
            timezone = "Europe/Berlin"
            allow = [ { days = "mon-thu", hours = "08:00-16:00" } ]
            holidays = ["12-24", "12-25", "12-26", "12-31", "01-01"]
            "#,
        );
        check_table(
            &p,
            &[
                ("Thu 08:00 CEST", "2026-10-22T06:00:00Z", NORMAL, OPEN, Some("2026-10-22T06:00:00Z")),
                ("Thu 16:00 CEST", "2026-10-22T14:00:00Z", NORMAL, CLOSED, Some("2026-10-26T07:00:00Z")),
                ("Mon 07:30 CET", "2026-10-26T06:30:00Z", NORMAL, CLOSED, Some("2026-10-26T07:00:00Z")),
                ("Mon 15:59 CET", "2026-10-26T14:59:00Z", NORMAL, OPEN, Some("2026-10-26T14:59:00Z")),
                ("Christmas Eve Thursday", "2026-12-24T09:00:00Z", NORMAL, CLOSED, Some("2026-12-28T07:00:00Z")),
            ],
        );
        assert_eq!(
            format_next_window(utc("2026-10-26T07:00:00Z"), utc("2026-10-22T14:00:00Z"), chrono_tz::Europe::Berlin),
            "Mon 26 Oct 08:00 CET, in 3d 17h"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn a_half_hour_offset_zone_uses_its_local_day() {
        let p = policy(
            r#"
            timezone = "Asia/Kolkata"
            allow = [ { days = "Monday-Friday", hours = "09:30-17:30" } ]
            holidays = ["10-02"]
            "#,
        );
        check_table(
            &p,
            &[
                ("a yearly holiday on a Friday", "2026-10-02T04:30:00Z", NORMAL, CLOSED, Some("2026-10-05T04:00:00Z")),
                ("Monday 01:30 IST is still Sunday in UTC", "2026-10-04T20:00:00Z", NORMAL, CLOSED, Some("2026-10-05T04:00:00Z")),
                ("Mon 09:29:59 IST", "2026-10-05T03:59:59Z", NORMAL, CLOSED, Some("2026-10-05T04:00:00Z")),
                ("Mon 09:30 IST", "2026-10-05T04:00:00Z", NORMAL, OPEN, Some("2026-10-05T04:00:00Z")),
                ("Mon 17:29:59 IST", "2026-10-05T11:59:59Z", NORMAL, OPEN, Some("2026-10-05T11:59:59Z")),
                ("Mon 17:30 IST", "2026-10-05T12:00:00Z", NORMAL, CLOSED, Some("2026-10-06T04:00:00Z")),
            ],
        );
        assert_eq!(
            format_next_window(utc("2026-10-05T04:00:00Z"), utc("2026-10-05T03:15:00Z"), chrono_tz::Asia::Kolkata),
            "Mon 5 Oct 09:30 IST, in 45m"
        );
    }

    #[test]
    #[rustfmt::skip]
    fn a_local_time_skipped_by_spring_forward_resolves_to_the_end_of_the_gap() {
        // Lord Howe Island jumps from 02:00 (+10:30) to 02:30 (+11) on Sun 4 Oct 2026.
        let p = policy(
            r#"
            timezone = "Australia/Lord_Howe"
            allow = [ { hours = "02:00-03:00" } ]
            "#,
        );
        check_table(
            &p,
            &[
                ("Sat 02:00 +10:30", "2026-10-02T15:30:00Z", NORMAL, OPEN, Some("2026-10-02T15:30:00Z")),
                ("Sat 03:00 +10:30", "2026-10-02T16:30:00Z", NORMAL, CLOSED, Some("2026-10-03T15:30:00Z")),
                ("Sun 01:59:59 +10:30", "2026-10-03T15:29:59Z", NORMAL, CLOSED, Some("2026-10-03T15:30:00Z")),
                ("Sun 02:30 +11, right after the gap", "2026-10-03T15:30:00Z", NORMAL, OPEN, Some("2026-10-03T15:30:00Z")),
                ("Sun 03:00 +11", "2026-10-03T16:00:00Z", NORMAL, CLOSED, Some("2026-10-04T15:00:00Z")),
            ],
        );
        // New York skips 02:00–03:00 on Sun 14 Mar 2027.
        check_table(
            &policy(
                r#"
                timezone = "America/New_York"
                allow = [ { days = "sun", hours = "02:30-04:00" } ]
                "#,
            ),
            &[
                ("01:59:59 EST", "2027-03-14T06:59:59Z", NORMAL, CLOSED, Some("2027-03-14T07:00:00Z")),
                ("03:00 EDT", "2027-03-14T07:00:00Z", NORMAL, OPEN, Some("2027-03-14T07:00:00Z")),
                ("04:00 EDT", "2027-03-14T08:00:00Z", NORMAL, CLOSED, Some("2027-03-21T06:30:00Z")),
            ],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn a_local_time_repeated_by_fall_back_resolves_to_its_first_occurrence() {
        // New York repeats 01:00–02:00 on Sun 1 Nov 2026 (05:00Z–06:00Z as EDT, 06:00Z–07:00Z as EST).
        check_table(
            &policy(
                r#"
                timezone = "America/New_York"
                allow = [ { hours = "01:30-03:00" } ]
                "#,
            ),
            &[
                ("01:29:59 EDT", "2026-11-01T05:29:59Z", NORMAL, CLOSED, Some("2026-11-01T05:30:00Z")),
                ("01:30 EDT", "2026-11-01T05:30:00Z", NORMAL, OPEN, Some("2026-11-01T05:30:00Z")),
                ("01:15 EST, after the first 01:30", "2026-11-01T06:15:00Z", NORMAL, OPEN, Some("2026-11-01T06:15:00Z")),
                ("03:00 EST", "2026-11-01T08:00:00Z", NORMAL, CLOSED, Some("2026-11-02T06:30:00Z")),
            ],
        );
        check_table(
            &policy(
                r#"
                timezone = "America/New_York"
                allow = [ { hours = "00:00-01:30" } ]
                "#,
            ),
            &[
                ("01:15 EDT", "2026-11-01T05:15:00Z", NORMAL, OPEN, Some("2026-11-01T05:15:00Z")),
                ("01:15 EST, after the first 01:30", "2026-11-01T06:15:00Z", NORMAL, CLOSED, Some("2026-11-02T05:00:00Z")),
            ],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn cron_instants_in_a_dst_gap_move_to_the_end_of_the_gap() {
        let p = policy(
            r#"
            timezone = "America/New_York"
            freeze = [ { start = "30 2 * * *", end = "0 4 * * *" } ]
            "#,
        );
        check_table(
            &p,
            &[
                ("Sat 02:30 EST", "2027-03-13T07:30:00Z", NORMAL, CLOSED, Some("2027-03-13T09:00:00Z")),
                ("Sun 01:59:59 EST", "2027-03-14T06:59:59Z", NORMAL, OPEN, Some("2027-03-14T06:59:59Z")),
                ("Sun 03:00 EDT", "2027-03-14T07:00:00Z", NORMAL, CLOSED, Some("2027-03-14T08:00:00Z")),
            ],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn next_window_skips_a_long_freeze_and_gives_up_after_400_days() {
        let summer = policy(
            r#"
            timezone = "UTC"
            freeze = [ { start = "0 0 1 6 *", end = "0 0 1 9 *", reason = "summer freeze" } ]
            "#,
        );
        check_table(
            &summer,
            &[
                ("just before", "2026-05-31T23:59:59Z", NORMAL, OPEN, Some("2026-05-31T23:59:59Z")),
                ("the start", "2026-06-01T00:00:00Z", NORMAL, CLOSED, Some("2026-09-01T00:00:00Z")),
                ("the middle", "2026-07-15T12:00:00Z", NORMAL, CLOSED, Some("2026-09-01T00:00:00Z")),
                ("the end", "2026-09-01T00:00:00Z", NORMAL, OPEN, Some("2026-09-01T00:00:00Z")),
            ],
        );
        // Frozen from 1 Jan until the next 29 Feb.
        let leap = policy(
            r#"
            timezone = "UTC"
            freeze = [ { start = "0 0 1 1 *", end = "0 0 29 2 *", reason = "leap freeze" } ]
            "#,
        );
        check_table(
            &leap,
            &[
                ("more than 400 days from the end", "2026-03-01T00:00:00Z", NORMAL, CLOSED, None),
                ("less than 400 days from the end", "2027-03-01T00:00:00Z", NORMAL, CLOSED, Some("2028-02-29T00:00:00Z")),
                ("a hotfix is allowed, with no normal window", "2026-03-01T00:00:00Z", HOTFIX, OPEN, None),
            ],
        );
        reason_table(
            &leap,
            &[("2027-03-01T00:00:00Z", NORMAL, "leap freeze until Tue 29 Feb 2028 00:00 UTC")],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn the_search_horizon_is_400_days_inclusive() {
        // Frozen from 1 Jan 2027 until 29 Feb 2028, which is exactly 400 days after 25 Jan 2027.
        let p = policy(
            r#"
            timezone = "UTC"
            freeze = [ { start = "0 0 1 1 *", end = "0 0 29 2 *" } ]
            "#,
        );
        check_table(
            &p,
            &[
                ("exactly 400 days before the end", "2027-01-25T00:00:00Z", NORMAL, CLOSED, Some("2028-02-29T00:00:00Z")),
                ("400 days and a second before", "2027-01-24T23:59:59Z", NORMAL, CLOSED, None),
            ],
        );
    }

    #[test]
    fn numeric_days_of_week_count_from_sunday_as_in_standard_cron() {
        let tz = chrono_tz::UTC;
        // Wed 2 Dec 2026; the next Friday is the 4th, the next Sunday the 6th, the next Monday the 7th.
        let after = utc("2026-12-02T12:00:00Z");
        let next = |expr: &str| {
            CronExpr::parse(expr)
                .unwrap_or_else(|e| panic!("{e}"))
                .next_after(tz, after)
        };
        assert_eq!(next("0 16 * * 5"), Some(utc("2026-12-04T16:00:00Z")));
        assert_eq!(next("0 16 * * fri"), Some(utc("2026-12-04T16:00:00Z")));
        assert_eq!(next("0 16 * * FRIDAY"), Some(utc("2026-12-04T16:00:00Z")));
        assert_eq!(next("0 0 * * 0"), Some(utc("2026-12-06T00:00:00Z")));
        assert_eq!(next("0 0 * * 7"), Some(utc("2026-12-06T00:00:00Z")));
        assert_eq!(next("0 0 * * 6-7"), Some(utc("2026-12-05T00:00:00Z")));
        assert_eq!(next("0 0 * * 1-5"), Some(utc("2026-12-03T00:00:00Z")));
        assert_eq!(next("0 0 * * mon"), Some(utc("2026-12-07T00:00:00Z")));
        assert_eq!(next("@weekly"), Some(utc("2026-12-06T00:00:00Z")));
        assert_eq!(next("@yearly"), Some(utc("2027-01-01T00:00:00Z")));
        assert_eq!(next("*/20 * * * *"), Some(utc("2026-12-02T12:20:00Z")));
        assert_eq!(
            next("0 9 * dec,jan,feb *"),
            Some(utc("2026-12-03T09:00:00Z"))
        );
        // Both restricted: the 1st of the month OR a Monday, as in Vixie cron.
        assert_eq!(next("0 12 1 * mon"), Some(utc("2026-12-07T12:00:00Z")));
        assert_eq!(next("0 12 5 * mon"), Some(utc("2026-12-05T12:00:00Z")));
        // ... so 31 February is fine when Mondays in February can match.
        assert_eq!(next("0 0 31 2 mon"), Some(utc("2027-02-01T00:00:00Z")));
        // A day-of-month field starting with `*` makes both fields required.
        assert_eq!(next("0 12 */2 * mon"), Some(utc("2026-12-07T12:00:00Z")));
        let expr = |e: &str| CronExpr::parse(e).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            expr("0 0 1 1 *").latest_at_or_before(tz, utc("2027-06-01T00:00:00Z")),
            Some(utc("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            expr("0 0 1 1 *").latest_at_or_before(tz, utc("2027-01-01T00:00:00Z")),
            Some(utc("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn cron_occurrences_in_the_repeated_hour_count_once_and_early() {
        let tz = chrono_tz::America::New_York;
        let half_past_one = CronExpr::parse("30 1 * * *").unwrap_or_else(|e| panic!("{e}"));
        // 01:30 on Sun 1 Nov 2026 happens at 05:30Z (EDT) and again at 06:30Z (EST); only the first counts.
        assert_eq!(
            half_past_one.next_after(tz, utc("2026-11-01T05:00:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            half_past_one.next_after(tz, utc("2026-11-01T05:30:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
        // From 01:10 EST (the second pass) the latest occurrence is the first 01:30, whose wall time is later.
        assert_eq!(
            half_past_one.latest_at_or_before(tz, utc("2026-11-01T06:10:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
    }

    #[test]
    #[rustfmt::skip]
    fn next_window_is_formatted_with_a_countdown() {
        let ny = chrono_tz::America::New_York;
        let cases = [
            ("2026-12-01T15:00:00Z", "2026-11-29T12:00:00Z", "Tue 1 Dec 10:00 EST, in 2d 3h"),
            ("2026-12-01T15:00:00Z", "2026-11-29T12:00:01Z", "Tue 1 Dec 10:00 EST, in 2d 3h"),
            ("2026-12-01T15:00:00Z", "2026-11-29T12:30:00Z", "Tue 1 Dec 10:00 EST, in 2d 2h"),
            ("2026-12-01T15:00:00Z", "2026-12-01T14:15:00Z", "Tue 1 Dec 10:00 EST, in 45m"),
            ("2026-12-01T15:00:00Z", "2026-12-01T11:55:00Z", "Tue 1 Dec 10:00 EST, in 3h 5m"),
            ("2026-12-01T15:00:00Z", "2026-12-01T12:00:00Z", "Tue 1 Dec 10:00 EST, in 3h"),
            ("2026-12-01T15:00:00Z", "2026-11-29T15:00:00Z", "Tue 1 Dec 10:00 EST, in 2d"),
            ("2026-12-01T15:00:00Z", "2026-12-01T14:59:30Z", "Tue 1 Dec 10:00 EST, in 1m"),
            ("2026-12-01T15:00:00Z", "2026-12-01T15:00:00Z", "Tue 1 Dec 10:00 EST, now"),
            ("2027-03-16T14:00:00Z", "2027-03-10T19:00:00Z", "Tue 16 Mar 10:00 EDT, in 5d 19h"),
            ("2027-11-30T15:00:00Z", "2026-12-01T15:00:00Z", "Tue 30 Nov 2027 10:00 EST, in 364d"),
        ];
        for (next, now, expected) in cases {
            assert_eq!(format_next_window(utc(next), utc(now), ny), expected, "{next} from {now}");
        }
    }

    #[test]
    fn the_description_lists_only_the_denials_that_apply() {
        let cases = [
            ("", "every day UTC"),
            ("holidays = [\"12-25\"]", "every day UTC; closed on holidays"),
            ("month_end_days = 2", "every day UTC; closed on the last 2 days of each month"),
            (
                "holidays = [\"12-25\"]\nmonth_end_days = 2",
                "every day UTC; closed on holidays and the last 2 days of each month",
            ),
            (
                "freeze = [ { start = \"@yearly\", end = \"@monthly\" }, { start = \"@daily\", end = \"@hourly\" } ]",
                "every day UTC; closed during 2 freezes",
            ),
            (
                "holidays = [\"12-25\"]\nfreeze = [ { start = \"@yearly\", end = \"@monthly\" } ]",
                "every day UTC; closed on holidays and during 1 freeze",
            ),
        ];
        for (body, expected) in cases {
            let p = policy(&format!("timezone = \"UTC\"\n{body}"));
            assert_eq!(p.describe(), expected, "{body}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn day_sets_are_described_compactly() {
        let cases = [
            ("tue-wed", "Tue–Wed"),
            ("mon,wed,fri", "Mon,Wed,Fri"),
            ("fri-mon", "Fri–Mon"),
            ("sat,sun", "Sat–Sun"),
            ("*", "every day"),
            ("mon-sun", "every day"),
            ("sun-sat", "every day"),
            ("wed", "Wed"),
            ("Tuesday – Thursday", "Tue–Thu"),
            ("mon,wed,sat-sun", "Wed,Sat–Mon"),
        ];
        for (text, expected) in cases {
            let days = parse_days(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(describe_days(days), expected, "{text}");
        }
        let p = policy(
            r#"
            timezone = "UTC"
            allow = [ { days = "mon-fri", hours = "09:00-12:00" }, { days = "sat" }, { hours = "22:00-24:00" } ]
            month_end_days = 1
            "#,
        );
        assert_eq!(
            p.describe(),
            "Mon–Fri 09:00–12:00, Sat, every day 22:00–24:00 UTC; closed on the last day of each month"
        );
        reason_table(
            &p,
            &[
                ("2026-11-30T10:00:00Z", NORMAL, "month-end: the last day of the month is closed"),
                ("2026-11-28T23:59:59Z", NORMAL, "inside the deployment window (Mon–Fri 09:00–12:00, Sat, every day 22:00–24:00 UTC)"),
            ],
        );
    }

    #[test]
    fn the_contract_example_deserializes_and_validates() {
        let c = config(
            r#"
            timezone = "America/New_York"
            allow = [ { days = "tue-wed", hours = "10:00-14:00" } ]
            month_end_days = 3
            holidays = ["2026-12-25", "2027-01-01", "07-04"]
            freeze = [ { start = "0 18 20 12 *", end = "0 8 4 1 *", reason = "year-end freeze", hotfix = false } ]
            "#,
        );
        assert!(!c.freeze[0].hotfix);
        assert!(Window::from_config(&c).is_ok());
        let minimal = config(r#"timezone = "UTC""#);
        assert_eq!(minimal.month_end_days, 0);
        assert!(
            minimal.allow.is_empty() && minimal.holidays.is_empty() && minimal.freeze.is_empty()
        );
    }

    #[test]
    fn a_freeze_allows_hotfixes_unless_it_says_otherwise() {
        let c = config(
            r#"
            timezone = "UTC"
            freeze = [ { start = "0 0 1 1 *", end = "0 0 2 1 *" } ]
            "#,
        );
        assert!(c.freeze[0].hotfix);
    }

    #[test]
    fn unknown_keys_are_rejected_when_deserializing() {
        for text in [
            "timezone = \"UTC\"\nmonth_end = 3",
            "timezone = \"UTC\"\nallow = [ { day = \"mon\" } ]",
            "timezone = \"UTC\"\nfreeze = [ { start = \"@daily\", end = \"@hourly\", hotfixes = false } ]",
        ] {
            assert!(toml::from_str::<WindowConfig>(text).is_err(), "{text}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn each_config_mistake_names_its_path_and_says_what_is_wrong() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"timezone = "America/NewYork""#, "timezone", r#"unknown timezone "America/NewYork" (IANA names like America/New_York)"#),
            (r#"timezone = "america/new_york""#, "timezone", r#"unknown timezone "america/new_york" (did you mean America/New_York?)"#),
            ("allow = [ { days = \"tue-wen\" } ]", "allow[0].days", r#"days "tue-wen": unknown day "wen" (use mon, tue, wed, thu, fri, sat or sun)"#),
            ("allow = [ { days = \"\" } ]", "allow[0].days", r#"days "": no days given (use e.g. "tue-wed", "mon,wed,fri" or "*")"#),
            ("allow = [ { days = \"mon,,fri\" } ]", "allow[0].days", r#"days "mon,,fri": empty entry in the list"#),
            ("allow = [ { days = \"1-5\" } ]", "allow[0].days", r#"days "1-5": unknown day "1" (use mon, tue, wed, thu, fri, sat or sun)"#),
            ("allow = [ {}, { hours = \"14:00-10:00\" } ]", "allow[1].hours", r#"hours "14:00-10:00": the end must be after the start (use two entries to span midnight)"#),
            ("allow = [ { hours = \"10:00-10:00\" } ]", "allow[0].hours", r#"hours "10:00-10:00": the end must be after the start (use two entries to span midnight)"#),
            ("allow = [ { hours = \"10-14\" } ]", "allow[0].hours", r#"hours "10-14": expected HH:MM-HH:MM, like "10:00-14:00""#),
            ("allow = [ { hours = \"10:00\" } ]", "allow[0].hours", r#"hours "10:00": expected HH:MM-HH:MM, like "10:00-14:00""#),
            ("allow = [ { hours = \"09:00-25:00\" } ]", "allow[0].hours", r#"hours "09:00-25:00": 25:00 is not a time of day (00:00 to 24:00)"#),
            ("allow = [ { hours = \"09:60-10:00\" } ]", "allow[0].hours", r#"hours "09:60-10:00": 09:60 is not a time of day (00:00 to 24:00)"#),
            ("allow = [ { hours = \"24:00-24:00\" } ]", "allow[0].hours", r#"hours "24:00-24:00": 24:00 can only end a range"#),
            ("month_end_days = 16", "month_end_days", "16 is out of range (0 to 15 days)"),
            ("holidays = [\"2026-12-25\", \"07-04\", \"2026-02-30\"]", "holidays[2]", r#"holiday "2026-02-30" is not a real date"#),
            ("holidays = [\"02-30\"]", "holidays[0]", r#"holiday "02-30" is not a real date"#),
            ("holidays = [\"12/25\"]", "holidays[0]", r#"holiday "12/25": expected YYYY-MM-DD or MM-DD"#),
            ("holidays = [\"2026-1-1\"]", "holidays[0]", r#"holiday "2026-1-1": expected YYYY-MM-DD or MM-DD"#),
            ("freeze = [ { start = \"0 18 32 12 *\", end = \"0 8 4 1 *\" } ]", "freeze[0].start", r#"invalid cron expression "0 18 32 12 *": day of month 32 out of range (1-31)"#),
            ("freeze = [ { start = \"0 18 20 12 *\", end = \"0 8 4 1\" } ]", "freeze[0].end", r#"invalid cron expression "0 8 4 1": expected 5 fields (minute hour day-of-month month day-of-week), found 4"#),
            ("freeze = [ { start = \"0 0 0 18 20 12 *\", end = \"0 8 4 1 *\" } ]", "freeze[0].start", r#"invalid cron expression "0 0 0 18 20 12 *": expected 5 fields (minute hour day-of-month month day-of-week), found 7"#),
            ("freeze = [ { start = \"0 17 * * 8\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "0 17 * * 8": day of week 8 out of range (0-7)"#),
            ("freeze = [ { start = \"0 17 * * fry\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "0 17 * * fry": day of week "fry" is not a number or a name"#),
            ("freeze = [ { start = \"0 24 * * *\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "0 24 * * *": hour 24 out of range (0-23)"#),
            ("freeze = [ { start = \"0 5-1 * * *\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "0 5-1 * * *": hour range "5-1" runs backwards (cron ranges do not wrap)"#),
            ("freeze = [ { start = \"*/0 * * * *\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "*/0 * * * *": minute step "0" must be a whole number of at least 1"#),
            ("freeze = [ { start = \"0 0 31 2 *\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "0 0 31 2 *": that day of month never occurs in the months given"#),
            ("freeze = [ { start = \"@reboot\", end = \"0 8 * * 1\" } ]", "freeze[0].start", r#"invalid cron expression "@reboot": unknown shorthand (use @yearly, @monthly, @weekly, @daily or @hourly)"#),
            ("freeze = [ { start = \"0 0 * * 7\", end = \"0 0 * * sun\" } ]", "freeze[0].end", r#""0 0 * * sun" is the same schedule as the start, so the freeze would never end"#),
        ];
        for &(body, path, message) in cases {
            let text = if body.starts_with("timezone") {
                body.to_owned()
            } else {
                format!("timezone = \"UTC\"\n{body}")
            };
            assert_eq!(
                errors_of(&text),
                vec![(path.to_owned(), message.to_owned())],
                "{body}"
            );
        }
    }

    #[test]
    fn all_config_mistakes_are_reported_together() {
        let errors = errors_of(
            r#"
            timezone = "Mars/Olympus"
            allow = [ { days = "tue-wed", hours = "10:00-14:00" }, { days = "tue-wen", hours = "14:00-10:00" }, { hours = "9-5" } ]
            # allow[1] has two mistakes, both reported
            month_end_days = 31
            holidays = ["2026-12-25", "2026-13-01"]
            freeze = [ { start = "0 18 32 12 *", end = "0 8 4 1 *" }, { start = "0 18 20 12 *", end = "bad" } ]
            "#,
        );
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "timezone",
                "allow[1].days",
                "allow[1].hours",
                "allow[2].hours",
                "month_end_days",
                "holidays[1]",
                "freeze[0].start",
                "freeze[1].end"
            ]
        );
        let shown = PolicyConfigError::new("freeze[1].end", "x").to_string();
        assert_eq!(shown, "freeze[1].end: x");
    }

    #[test]
    fn holidays_accept_real_dates_and_yearly_leap_days() {
        assert_eq!(
            parse_holiday("02-29"),
            Ok(Holiday::Yearly { month: 2, day: 29 })
        );
        let p = policy(
            r#"
            timezone = "UTC"
            holidays = ["02-29"]
            "#,
        );
        assert!(!p.check(utc("2028-02-29T12:00:00Z"), NORMAL).allowed);
        assert!(p.check(utc("2027-02-28T12:00:00Z"), NORMAL).allowed);
        assert!(p.check(utc("2027-03-01T12:00:00Z"), NORMAL).allowed);
    }

    // -----------------------------------------------------------------------------------------
    // Properties
    // -----------------------------------------------------------------------------------------

    fn instant_between(lo: &str, hi: &str) -> impl Strategy<Value = DateTime<Utc>> {
        let (lo, hi) = (utc(lo).timestamp(), utc(hi).timestamp());
        (lo..hi).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
    }

    fn assert_next_window_is_the_first_allowed_instant(
        p: &Policy,
        at: DateTime<Utc>,
        samples: &[u32],
    ) {
        let allowed = |t: DateTime<Utc>| p.check(t, NORMAL).allowed;
        let next = p.next_window(at);
        if allowed(at) {
            assert_eq!(next, Some(at), "allowed at {at} but next_window differs");
        }
        let Some(next) = next else {
            for &s in samples {
                let t = at + TimeDelta::seconds(i64::from(s) % (SEARCH_DAYS * 86_400));
                assert!(!allowed(t), "next_window({at}) is None but {t} is allowed");
            }
            return;
        };
        assert!(next >= at, "next_window({at}) = {next} is before it");
        assert!(next - at <= TimeDelta::days(SEARCH_DAYS));
        assert!(allowed(next), "next_window({at}) = {next} is not allowed");
        let gap = (next - at).num_seconds();
        if gap > 0 {
            let before = next - TimeDelta::seconds(1);
            if before > at {
                assert!(
                    !allowed(before),
                    "{before} is allowed, before next_window({at}) = {next}"
                );
            }
            assert!(!allowed(at), "{at} is allowed but next_window is {next}");
            for &s in samples {
                let t = at + TimeDelta::seconds(i64::from(s) % gap);
                assert!(
                    !allowed(t),
                    "{t} is allowed, before next_window({at}) = {next}"
                );
            }
        }
    }

    fn production() -> &'static Policy {
        static PRODUCTION_POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        PRODUCTION_POLICY.get_or_init(|| policy(PRODUCTION))
    }

    proptest! {
        #[test]
        fn production_next_window_is_the_first_allowed_instant(
            at in instant_between("2025-06-01T00:00:00Z", "2029-06-01T00:00:00Z"),
            samples in proptest::collection::vec(any::<u32>(), 50),
        ) {
            assert_next_window_is_the_first_allowed_instant(production(), at, &samples);
            prop_assert!(production().next_window(at).is_some());
        }

        #[test]
        fn production_next_window_from_near_a_boundary_is_exact(
            day in 0i64..1500,
            minute in prop_oneof![Just(600i64), Just(840), Just(1080), Just(480), Just(0), 0i64..1440],
            offset in -3i64..=3,
            samples in proptest::collection::vec(any::<u32>(), 20),
        ) {
            let local = NaiveDate::from_ymd_opt(2025, 6, 1).unwrap_or_default()
                .and_time(NaiveTime::MIN)
                + TimeDelta::days(day) + TimeDelta::minutes(minute);
            let at = resolve_local(chrono_tz::America::New_York, local) + TimeDelta::seconds(offset);
            assert_next_window_is_the_first_allowed_instant(production(), at, &samples);
        }

        #[test]
        fn random_windows_agree_between_check_and_next_window(
            tz in prop::sample::select(vec![
                chrono_tz::America::New_York, chrono_tz::Europe::Berlin, chrono_tz::Asia::Kolkata,
                chrono_tz::Australia::Lord_Howe, chrono_tz::UTC, chrono_tz::America::Sao_Paulo,
                chrono_tz::Pacific::Auckland, chrono_tz::America::Havana, chrono_tz::America::Santiago,
            ]),
            entries in proptest::collection::vec(
                (1u8..128, 0u32..1440, 1u32..=1440, any::<bool>()), 0..4),
            month_end_days in 0u32..6,
            holidays in proptest::collection::vec((1u32..=12, 1u32..=28), 0..4),
            freeze in prop::option::of(prop::sample::select(vec![
                ("0 18 20 12 *", "0 8 4 1 *"),
                ("0 16 * * 5", "0 6 * * 1"),
                ("30 2 * * *", "0 4 * * *"),
                ("0 1 * * 0", "30 1 * * 0"),
                ("0 0 1 6 *", "0 0 1 9 *"),
                ("0 12 1,15 * mon", "0 13 * * *"),
            ])),
            at in instant_between("2026-01-01T00:00:00Z", "2028-12-31T00:00:00Z"),
            samples in proptest::collection::vec(any::<u32>(), 50),
        ) {
            let allow = entries
                .iter()
                .map(|&(days, a, b, whole)| {
                    let (start, end) = (a.min(b - 1), a.max(b).max(a + 1).min(1440));
                    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
                    let days = (0..7)
                        .filter(|i| days & (1 << i) != 0)
                        .map(|i| DAY_NAMES[i].0)
                        .collect::<Vec<_>>()
                        .join(",");
                    AllowConfig {
                        days: Some(days),
                        hours: (!whole).then(|| format!("{}-{}", hhmm(start), hhmm(end))),
                    }
                })
                .collect();
            let c = WindowConfig {
                timezone: tz.name().to_owned(),
                allow,
                month_end_days,
                holidays: holidays.iter().map(|(m, d)| format!("{m:02}-{d:02}")).collect(),
                freeze: freeze
                    .into_iter()
                    .map(|(start, end)| FreezeConfig {
                        start: start.to_owned(),
                        end: end.to_owned(),
                        reason: None,
                        hotfix: true,
                    })
                    .collect(),
            };
            let window = Window::from_config(&c);
            prop_assert!(window.is_ok(), "{:?}", window.err());
            if let Ok(window) = window {
                assert_next_window_is_the_first_allowed_instant(&Policy::new(window), at, &samples);
            }
        }

        #[test]
        fn near_dst_changes_no_minute_before_next_window_is_allowed(
            (tz, transition) in prop::sample::select(vec![
                (chrono_tz::America::New_York, "2026-11-01T06:00:00Z"),
                (chrono_tz::America::New_York, "2027-03-14T07:00:00Z"),
                (chrono_tz::Europe::Berlin, "2026-10-25T01:00:00Z"),
                (chrono_tz::Europe::Berlin, "2027-03-28T01:00:00Z"),
                (chrono_tz::Australia::Lord_Howe, "2026-10-03T15:30:00Z"),
                (chrono_tz::Australia::Lord_Howe, "2027-04-03T15:00:00Z"),
                // Havana skips and repeats its midnight hour; Santiago changes at 24:00.
                (chrono_tz::America::Havana, "2026-03-08T05:00:00Z"),
                (chrono_tz::America::Havana, "2026-11-01T05:00:00Z"),
                (chrono_tz::America::Santiago, "2026-04-05T03:00:00Z"),
                (chrono_tz::America::Santiago, "2026-09-06T04:00:00Z"),
                (chrono_tz::Pacific::Auckland, "2026-04-04T14:00:00Z"),
                (chrono_tz::Pacific::Auckland, "2026-09-26T14:00:00Z"),
            ]),
            entries in proptest::collection::vec(
                (1u8..128, prop_oneof![0u32..240, 1320u32..1440], 1u32..180, any::<bool>()), 1..3),
            freeze in prop::option::of(prop::sample::select(vec![
                ("30 1 * * *", "0 3 * * *"),
                ("0 0 * * *", "15 0 * * *"),
                ("45 23 * * *", "30 0 * * *"),
                ("15 2 * * 0", "45 2 * * 0"),
            ])),
            offset in -36 * 3600i64..36 * 3600,
        ) {
            let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
            let allow = entries
                .iter()
                .map(|&(days, start, len, whole)| AllowConfig {
                    days: Some(
                        (0..7)
                            .filter(|i| days & (1 << i) != 0)
                            .map(|i| DAY_NAMES[i].0)
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    hours: (!whole).then(|| format!("{}-{}", hhmm(start), hhmm((start + len).min(1440)))),
                })
                .collect();
            let c = WindowConfig {
                timezone: tz.name().to_owned(),
                allow,
                month_end_days: 0,
                holidays: Vec::new(),
                freeze: freeze
                    .into_iter()
                    .map(|(start, end)| FreezeConfig {
                        start: start.to_owned(),
                        end: end.to_owned(),
                        reason: None,
                        hotfix: true,
                    })
                    .collect(),
            };
            let window = Window::from_config(&c);
            prop_assert!(window.is_ok(), "{:?}", window.err());
            let Ok(window) = window else { return Ok(()) };
            let allowed = |t: DateTime<Utc>| window.denial(t, &window.active_freezes(t)).is_none();
            let p = Policy::new(window.clone());
            let at = utc(transition) + TimeDelta::seconds(offset) + TimeDelta::milliseconds(offset % 1000);
            let next = p.next_window(at);
            prop_assert_eq!(p.check(at, NORMAL).allowed, allowed(at));
            if allowed(at) {
                prop_assert_eq!(next, Some(at));
            }
            if let Some(next) = next {
                prop_assert!(next >= at && allowed(next), "next_window({}) = {} is not allowed", at, next);
            }
            // State only changes on whole minutes here, so checking each one up to `next` is exhaustive.
            let limit = next.unwrap_or(at + TimeDelta::days(2)).min(at + TimeDelta::days(2));
            let mut minute = at.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(at) + TimeDelta::minutes(1);
            while minute < limit {
                prop_assert!(!allowed(minute), "{} is allowed, before next_window({}) = {:?}", minute, at, next);
                minute += TimeDelta::minutes(1);
            }
        }

        #[test]
        fn cron_occurrences_match_a_minute_by_minute_scan(
            minutes in prop::sample::subsequence((0u32..60).collect::<Vec<_>>(), 1..4),
            hours in prop::sample::subsequence((0u32..24).collect::<Vec<_>>(), 1..6),
            doms in prop::option::of(prop::sample::subsequence((1u32..=31).collect::<Vec<_>>(), 1..8)),
            dows in prop::option::of(prop::sample::subsequence((0u32..=7).collect::<Vec<_>>(), 1..4)),
            at in instant_between("2026-01-01T00:00:00Z", "2028-12-31T00:00:00Z"),
        ) {
            let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            let text = format!(
                "{} {} {} * {}",
                list(&minutes),
                list(&hours),
                doms.as_deref().map_or("*".to_owned(), list),
                dows.as_deref().map_or("*".to_owned(), list),
            );
            let expr = CronExpr::parse(&text);
            prop_assert!(expr.is_ok(), "{:?}", expr.err());
            let Ok(expr) = expr else { return Ok(()) };
            let matches = |t: DateTime<Utc>| {
                let dom_ok = doms.as_ref().is_none_or(|d| d.contains(&t.day()));
                let dow_ok = dows.as_ref().is_none_or(|d| {
                    let n = t.weekday().num_days_from_sunday();
                    d.contains(&n) || (n == 0 && d.contains(&7))
                });
                let day_ok = if doms.is_some() && dows.is_some() { dom_ok || dow_ok } else { dom_ok && dow_ok };
                minutes.contains(&t.minute()) && hours.contains(&t.hour()) && day_ok
            };
            let start = at.with_second(0).unwrap_or(at);
            let expected_next = (1..=60 * 24 * 40)
                .map(|m| start + TimeDelta::minutes(m))
                .find(|t| matches(*t));
            let expected_prev = (0..=60 * 24 * 40)
                .map(|m| start - TimeDelta::minutes(m))
                .find(|t| matches(*t));
            if let Some(expected) = expected_next {
                prop_assert_eq!(expr.next_after(chrono_tz::UTC, start), Some(expected), "{} after {}", text, start);
            }
            if let Some(expected) = expected_prev {
                prop_assert_eq!(expr.latest_at_or_before(chrono_tz::UTC, start), Some(expected), "{} before {}", text, start);
            }
        }
    }
}
