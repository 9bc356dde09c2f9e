//! `aggregate`: gathers messages into groups by a key and passes one message per group on.
//!
//! A group completes when it holds `count` messages, when it holds `max_bytes` of JSON, when a
//! message makes `until` true (that message included), or `period` after its first message
//! (the time window; 10 s unless set, so no group waits forever). The group's message is the
//! array of the values in arrival order, or what `reduce` (VRL, run once per value with the
//! accumulator as `.` and the value as `%item`, starting from `initial`) makes of them; its
//! metadata is the first message's, with `%aggregate` (`key`, `count`, `partial`).
//!
//! `correlate: split` is the gather half of scatter-gather: the parts a `split` made of one
//! message are grouped by `%split.parent`, put back in `%split.index` order, and the group
//! completes when all `%split.count` parts are accounted for: in the group, or dropped on
//! purpose on their way (a `filter`). A group still short of parts after `period` goes on with
//! what it has, marked `%aggregate.partial = true`.
//!
//! Nothing is acknowledged early: a message taken into a group counts as delivered when the
//! group's message is (and fails when it fails). Its place in the flow's `concurrency` (a
//! durable flow's workers) is held meanwhile: with `count` above it, groups of separate input
//! messages can only close by `period`. (The parts of one `split` message share its place.)
//! Groups live in memory: a stop before a group closes acks none of its messages.
//!
//! ```yaml
//! pipeline:
//!   - aggregate:
//!       key: .customer_id
//!       count: 100
//!       period: 5s
//! # scatter-gather:
//!   - split: .lines
//!   - http: { url: "https://prices.example.com/{{ .sku }}" }
//!   - aggregate: { correlate: split, period: 30s }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::config::units::{Dur, Size};
use crate::core::mapping::{Mapping, Outcome, empty_object, insert};
use crate::core::{
    Context, Group, GroupOutcome, MappingError, Message, Now, Step, StepError, Value,
};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "AggregateProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A VRL expression giving the group key; default: one group for every message.
    #[serde(default)]
    pub key: Option<String>,
    /// Complete a group at this many messages.
    #[serde(default)]
    pub count: Option<usize>,
    /// Complete a group at this many bytes of JSON.
    #[serde(default)]
    pub max_bytes: Option<Size>,
    /// A VRL condition: the message that makes it true completes its group.
    #[serde(default)]
    pub until: Option<String>,
    /// How long after its first message a group completes at the latest.
    #[serde(default = "default_period")]
    pub period: Dur,
    /// A VRL program run once per value: `.` is the accumulator, `%item` the value.
    #[serde(default)]
    pub reduce: Option<String>,
    /// The accumulator's start for `reduce` (JSON); default `{}`.
    #[serde(default)]
    pub initial: Option<serde_json::Value>,
    /// `split`: reassemble the parts of a split message.
    #[serde(default)]
    pub correlate: Option<Correlate>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Correlate {
    Split,
}

fn default_period() -> Dur {
    Dur(Duration::from_secs(10))
}

/// A group waits at most this long: a durable delivery worker holds the lease of every message
/// in it meanwhile.
const MAX_PERIOD: Duration = Duration::from_secs(300);

impl super::Spec for Config {
    type Built = Aggregate;

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<Aggregate, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mut compile = |field: &str, source: &Option<String>| {
            source.as_deref().and_then(|s| {
                Mapping::compile(s)
                    .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
                    .ok()
            })
        };
        let key = compile("key", &self.key);
        let until = compile("until", &self.until);
        let reduce = compile("reduce", &self.reduce);
        if self.period.0.is_zero() || self.period.0 > MAX_PERIOD {
            errors.push(BuildError::new(
                "period",
                format!("between 1ms and {MAX_PERIOD:?}"),
            ));
        }
        if self.count == Some(0) {
            errors.push(BuildError::new("count", "at least 1"));
        }
        if self.correlate.is_some() && self.count.is_some() {
            errors.push(BuildError::new(
                "count",
                "`correlate: split` completes a group at `%split.count`; drop `count`",
            ));
        }
        if self.correlate.is_some() && self.key.is_some() {
            errors.push(BuildError::new(
                "key",
                "`correlate: split` groups by `%split.parent`; drop `key`",
            ));
        }
        if self.initial.is_some() && self.reduce.is_none() {
            errors.push(BuildError::new("initial", "`initial` starts a `reduce`"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let initial = match &self.initial {
            Some(json) => serde_json::from_value(json.clone())
                .map_err(|e| vec![BuildError::new("initial", e.to_string())])?,
            None => empty_object(),
        };
        Ok(Aggregate {
            key,
            count: self.count,
            max_bytes: self.max_bytes.map(|s| s.0 as usize),
            until,
            period: self.period.0,
            reduce,
            initial,
            correlate: self.correlate.is_some(),
            groups: Mutex::default(),
        })
    }
}

pub struct Aggregate {
    key: Option<Mapping>,
    count: Option<usize>,
    max_bytes: Option<usize>,
    until: Option<Mapping>,
    period: Duration,
    reduce: Option<Mapping>,
    initial: Value,
    correlate: bool,
    /// Open groups by key. A group is removed by whoever completes it, or by its first
    /// message's task when its period ends. Looked up once per message (a split's part
    /// included): foldhash, seeded per process, where SipHash was 3-4 % of a scatter-gather.
    /// The map holds at most one group per message in flight.
    groups: Mutex<HashMap<GroupKey, Arc<Open>, foldhash::fast::RandomState>>,
}

/// What a group is gathered by: the key expression's text, or the id of the split message
/// whose parts it gathers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum GroupKey {
    Text(String),
    Parent(ulid::Ulid),
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupKey::Text(text) => f.write_str(text),
            GroupKey::Parent(id) => write!(f, "{id}"),
        }
    }
}

/// A group being gathered.
struct Open {
    state: Mutex<Gathered>,
    /// Wakes the first message's task when another message completed the group.
    complete: Notify,
    /// Tells every message of the group how the group's message fared.
    group: Group,
    /// `correlate: split`: the parts of the split message, some of which may be dropped.
    parts: Option<Arc<crate::core::SplitParts>>,
}

#[derive(Default)]
struct Gathered {
    /// (order, value): arrival order, or `%split.index` when correlating.
    items: Vec<(i64, Value)>,
    bytes: usize,
    expected: Option<usize>,
    complete: bool,
    /// The first message's task took the items: a message that finds this starts over.
    taken: bool,
}

impl Aggregate {
    /// The group key, the message's place in its group and the group's expected size. A
    /// split's part is gathered by its parent's id, read from the message: no text is made per
    /// part, and `%split` need not be built.
    fn key_of(&self, message: &Message) -> Result<(GroupKey, i64, Option<usize>), MappingError> {
        if self.correlate {
            let part = message.part.ok_or_else(|| {
                MappingError("`correlate: split` needs a message from `split`".into())
            })?;
            return Ok((
                GroupKey::Parent(part.parent),
                part.index as i64,
                Some(part.count),
            ));
        }
        let key = match &self.key {
            Some(k) => k.key(&message.value, &message.metadata)?,
            None => String::new(),
        };
        Ok((GroupKey::Text(key), 0, self.count))
    }

    /// The first message's wait: until another message completes the group, or the last
    /// missing parts are dropped on their way, or `period` ends.
    async fn wait(&self, key: &GroupKey, open: &Arc<Open>) {
        let deadline = tokio::time::Instant::now() + self.period;
        let mut drops = open.parts.as_ref().map(|p| p.watch());
        loop {
            // Checked after the watch began, so a part dropped just before is not missed.
            if open.parts.is_some() {
                let mut state = open.state.lock().unwrap_or_else(|e| e.into_inner());
                if all_in(&state, open.parts.as_deref()) {
                    state.complete = true;
                    drop(state);
                    self.close(key, open);
                    return;
                }
            }
            let dropped = async {
                match &mut drops {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = open.complete.notified() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = dropped => {}
            }
        }
    }

    /// Takes the group out of the open ones, if it is still there.
    fn close(&self, key: &GroupKey, open: &Arc<Open>) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.get(key).is_some_and(|o| Arc::ptr_eq(o, open)) {
            groups.remove(key);
        }
    }
}

/// What a message brings to its group, worked out before any group is touched.
struct Arrival {
    key: GroupKey,
    /// Its place in the group (`%split.index` when correlating).
    index: i64,
    expected: Option<usize>,
    /// `until` was true for it: it completes its group.
    ends: bool,
    bytes: usize,
}

/// How a message entered a group.
enum Entry {
    /// Into a group another message opened: that message carries the group on.
    Joined,
    /// It opened the group, and carries it on once it completes: the message is given back
    /// without its value, for its id and metadata.
    Opened {
        open: Arc<Open>,
        complete: bool,
        message: Message,
    },
    /// No group was open and none was to be opened (in place): the message, given back.
    NoGroup(Message),
}

impl Aggregate {
    fn arrival(&self, message: &Message) -> Result<Arrival, StepError> {
        let (key, index, expected) = self.key_of(message)?;
        let ends = match &self.until {
            Some(until) => match until.eval(&message.value, &message.metadata)? {
                Value::Boolean(b) => b,
                other => {
                    return Err(MappingError(format!(
                        "aggregate `until` must be true or false, got {}",
                        crate::core::mapping::to_text(&other)
                    ))
                    .into());
                }
            },
            None => false,
        };
        let bytes = if self.max_bytes.is_some() {
            serde_json::to_vec(&message.value).map_or(0, |b| b.len())
        } else {
            0
        };
        Ok(Arrival {
            key,
            index,
            expected,
            ends,
            bytes,
        })
    }

    /// Puts the message's value into its group: an open one, or (when `open_new`) a new one
    /// this message opens. The value is taken out of the message.
    fn enter(
        &self,
        mut message: Message,
        arrival: &Arrival,
        open_new: bool,
        cx: &mut Context<'_>,
    ) -> Entry {
        let key = &arrival.key;
        let (open, first, complete) = loop {
            let (open, first) = {
                let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                match groups.get(key) {
                    Some(open) => (open.clone(), false),
                    None if !open_new => return Entry::NoGroup(message),
                    None => {
                        let open = Arc::new(Open {
                            state: Mutex::new(Gathered {
                                // Sized once for a group of known size (a split's parts, a
                                // count), within reason: a count is the user's to set.
                                items: Vec::with_capacity(arrival.expected.unwrap_or(0).min(1024)),
                                expected: arrival.expected,
                                ..Default::default()
                            }),
                            complete: Notify::new(),
                            group: Group::new(),
                            parts: if self.correlate {
                                cx.split.clone()
                            } else {
                                None
                            },
                        });
                        groups.insert(key.clone(), open.clone());
                        (open, true)
                    }
                }
            };
            let mut state = open.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.taken || state.complete {
                // Closed between the lookup and now, or complete and about to be taken out of
                // the open ones by the message that completed it: this message belongs to the
                // next group. (Joining a complete group would make it one too big and leave the
                // next one short, waiting for its period.)
                drop(state);
                self.close(key, &open);
                continue;
            }
            let order = if self.correlate {
                arrival.index
            } else {
                state.items.len() as i64
            };
            // Pushed once: the loop starts over only before this point.
            state
                .items
                .push((order, std::mem::replace(&mut message.value, Value::Null)));
            state.bytes += arrival.bytes;
            state.complete = state.complete
                || arrival.ends
                || all_in(&state, open.parts.as_deref())
                || self.max_bytes.is_some_and(|max| state.bytes >= max);
            let complete = state.complete;
            drop(state);
            break (open, first, complete);
        };
        if complete {
            self.close(key, &open);
            open.complete.notify_one();
        }
        if first {
            // The opener carries the group on: its id and metadata become the group's.
            return Entry::Opened {
                open,
                complete,
                message,
            };
        }
        cx.trail.joined.push(open.group.joined());
        // A group's message taken into another group (two aggregates in a row): the groups
        // it carried fare as the new group's message does.
        let carried = std::mem::take(&mut cx.trail.groups);
        if !carried.is_empty() {
            let joined = open.group.joined();
            tokio::spawn(async move {
                let outcome = joined.outcome().await;
                for group in carried {
                    group.settle(outcome.clone());
                }
            });
        }
        Entry::Joined
    }
}

impl crate::core::Processor for Aggregate {
    /// Joining a group another message opened needs no waiting, so it is done in place; the
    /// message that opens a group waits for the rest, in [`Self::process`].
    fn process_now(&self, message: Message, cx: &mut Context<'_>) -> Now {
        let arrival = match self.arrival(&message) {
            Ok(arrival) => arrival,
            Err(e) => return Now::Done(Err(e)),
        };
        match self.enter(message, &arrival, false, cx) {
            Entry::Joined => Now::Done(Ok(Step::Absorbed)),
            Entry::NoGroup(message) => Now::Later(message),
            Entry::Opened { .. } => unreachable!("no group is opened in place"),
        }
    }

    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        let arrival = self.arrival(&message)?;
        let key = &arrival.key;
        let (open, complete, message) = match self.enter(message, &arrival, true, cx) {
            Entry::Joined => return Ok(Step::Absorbed),
            Entry::Opened {
                open,
                complete,
                message,
            } => (open, complete, message),
            Entry::NoGroup(_) => unreachable!("a group is opened when none is"),
        };
        // The first message's task carries the group's message on; if it is dropped meanwhile
        // (shutdown), the guard closes the group so later messages start a new one, and the
        // others' waits end in failure (they are not acknowledged).
        let guard = Closing {
            aggregate: self,
            key,
            open: &open,
        };
        if !complete {
            self.wait(key, &open).await;
        }
        drop(guard);
        let mut state = {
            let mut state = open.state.lock().unwrap_or_else(|e| e.into_inner());
            let taken = std::mem::take(&mut *state);
            state.taken = true;
            taken
        };
        let partial = self.correlate && !all_in(&state, open.parts.as_deref());
        state.items.sort_by_key(|(order, _)| *order);
        let count = state.items.len();
        let values = state.items.into_iter().map(|(_, v)| v);
        let value = match &self.reduce {
            None => Value::Array(values.collect()),
            Some(reduce) => {
                let mut acc = self.initial.clone();
                for item in values {
                    let mut meta = message.metadata.clone();
                    insert(&mut meta, "item", item);
                    match reduce.run(&mut acc, &mut meta) {
                        Ok(Outcome::Done(_) | Outcome::Aborted) => {}
                        Err(e) => {
                            // The members wait for this group: tell them it failed.
                            open.group
                                .settle(GroupOutcome::Failed(format!("aggregate reduce: {e}")));
                            return Err(e.into());
                        }
                    }
                }
                acc
            }
        };
        let mut merged = Message::new(value);
        // The carrier's id: a retried carrier (durable) makes a message of the same id.
        merged.id = message.id;
        merged.metadata = message.metadata;
        if let Value::Object(meta) = &mut merged.metadata {
            meta.remove("split");
        }
        let mut meta = empty_object();
        insert(&mut meta, "key", Value::from(key.to_string()));
        insert(&mut meta, "count", Value::from(count as i64));
        insert(&mut meta, "partial", Value::Boolean(partial));
        insert(&mut merged.metadata, "aggregate", meta);
        cx.trail.groups.push(open.group.clone());
        Ok(Step::One(merged))
    }

    /// `correlate: split` reads the part's place from the message itself, not `%split`.
    fn reads_metadata(&self) -> bool {
        [&self.key, &self.until, &self.reduce]
            .into_iter()
            .flatten()
            .any(Mapping::reads_metadata)
    }
}

struct Closing<'a> {
    aggregate: &'a Aggregate,
    key: &'a GroupKey,
    open: &'a Arc<Open>,
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.aggregate.close(self.key, self.open);
    }
}

/// Whether the group holds its `expected` messages, counting the parts dropped on their way.
fn all_in(state: &Gathered, parts: Option<&crate::core::SplitParts>) -> bool {
    let dropped = parts.map_or(0, crate::core::SplitParts::dropped);
    state
        .expected
        .is_some_and(|n| state.items.len() + dropped >= n)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::core::Trail;
    use crate::core::flow::{Flow, Processed, ProcessorSlot, run_nested};
    use crate::processors::{Processor, Spec as _, split};

    fn field<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
        match value {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-zé\"<> ]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn steps() -> Vec<ProcessorSlot<Processor>> {
        let split = split::Config {
            path: ".items".into(),
            max_parts: 100,
            keep: None,
        }
        .build(&Shared::default(), &Resources::default())
        .unwrap();
        let aggregate = Config {
            key: None,
            count: None,
            max_bytes: None,
            until: None,
            period: Dur(Duration::from_secs(5)),
            reduce: None,
            initial: None,
            correlate: Some(Correlate::Split),
        }
        .build(&Shared::default(), &Resources::default())
        .unwrap();
        vec![
            ProcessorSlot::new("split".into(), Processor::Split(Box::new(split))),
            ProcessorSlot::new(
                "aggregate".into(),
                Processor::Aggregate(Box::new(aggregate)),
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the arrays, `split` then `aggregate` by correlation gives each one back
        /// whole and in order, also with several split messages in flight at once.
        #[test]
        fn split_then_aggregate_gives_back_the_array(
            arrays in prop::collection::vec(prop::collection::vec(json_value(), 1..12), 1..4)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let steps = steps();
            let results = runtime.block_on(futures_util::future::join_all(arrays.iter().map(|items| {
                let steps = &steps;
                async move {
                    let value: Value =
                        serde_json::from_value(serde_json::json!({ "items": items })).unwrap();
                    let mut trail = Trail::default();
                    // Nothing reads metadata: the parts carry no `%split`, and are gathered all the same.
                    let mut cx = Context { flow: "test", store: None, trail: &mut trail, tap: None, split: None, reads_metadata: false };
                    let out = run_nested(steps, Message::new(value), &mut cx).await.unwrap();
                    (out, trail.joined.len())
                }
            })));
            for (items, (out, joined)) in arrays.iter().zip(results) {
                prop_assert_eq!(out.len(), 1);
                prop_assert_eq!(joined, items.len() - 1);
                let back = serde_json::to_value(&out[0].value).unwrap();
                prop_assert_eq!(&back, &serde_json::Value::from(items.clone()));
                let partial = field(field(&out[0].metadata, "aggregate").unwrap(), "partial");
                prop_assert_eq!(partial, Some(&Value::Boolean(false)));
            }
        }
    }

    /// The steps of a flow written in YAML, built as `weft run` builds them.
    fn pipeline(yaml: &str) -> Vec<ProcessorSlot<Processor>> {
        let text = format!(
            "flows:\n  test:\n    input: {{ stdin: {{}} }}\n    pipeline:\n{yaml}\n    output: {{ drop: {{}} }}\n"
        );
        let loaded = crate::load::load_str("test.yaml", &text, &|_| None, &Shared::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let spec = loaded.flows.into_iter().next().expect("one flow");
        spec.processors
            .into_iter()
            .map(|(id, processor)| ProcessorSlot::new(id, processor))
            .collect()
    }

    async fn through(
        steps: &[ProcessorSlot<Processor>],
        json: serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let mut trail = Trail::default();
        let mut cx = Context {
            flow: "test",
            store: None,
            trail: &mut trail,
            tap: None,
            split: None,
            reads_metadata: false,
        };
        let value: Value = serde_json::from_value(json).unwrap();
        run_nested(steps, Message::new(value), &mut cx)
            .await
            .unwrap()
            .iter()
            .map(|m| serde_json::to_value(&m.value).unwrap())
            .collect()
    }

    /// Parts split again run on in place as the first parts do, and are gathered by their own
    /// parent; a `catch` after a split gets a failed part as it was, and the group gathers it.
    #[tokio::test]
    async fn parts_split_again_and_failed_parts_caught_are_gathered() {
        let nested = pipeline(
            "      - split: .orders\n      - split: .lines\n      - map: .seen = true\n      - aggregate: { correlate: split, period: 5s }",
        );
        let mut out = through(
            &nested,
            serde_json::json!({"orders": [{"lines": [{"n": 1}, {"n": 2}]}, {"lines": [{"n": 3}]}]}),
        )
        .await;
        out.sort_by_key(|v| v.as_array().map(Vec::len));
        assert_eq!(
            out,
            [
                serde_json::json!([{"n": 3, "seen": true}]),
                serde_json::json!([{"n": 1, "seen": true}, {"n": 2, "seen": true}]),
            ]
        );

        let caught = pipeline(
            "      - split: .items\n      - map: .q = to_int!(.d)\n      - catch:\n          - map: .failed = true\n      - aggregate: { correlate: split, period: 5s }",
        );
        let out = through(
            &caught,
            serde_json::json!({"items": [{"d": "4"}, {"d": "x"}, {"d": "3"}]}),
        )
        .await;
        assert_eq!(
            out,
            [
                serde_json::json!([{"d": "4", "q": 4}, {"d": "x", "failed": true}, {"d": "3", "q": 3}])
            ]
        );
    }

    /// Records what it is given and accepts it.
    struct Recorder(std::sync::Mutex<Vec<Message>>);

    impl crate::core::Output for Arc<Recorder> {
        async fn send(&self, message: &Message) -> crate::core::Attempt {
            self.0.lock().unwrap().push(message.clone());
            crate::core::Attempt::Delivered
        }

        fn reads_metadata(&self) -> bool {
            true
        }
    }

    /// One group for everything, closed at `count` or after 5 s.
    fn one_group(count: Option<usize>) -> Aggregate {
        Config {
            key: None,
            count,
            max_bytes: None,
            until: None,
            period: Dur(Duration::from_secs(5)),
            reduce: None,
            initial: None,
            correlate: None,
        }
        .build(&Shared::default(), &Resources::default())
        .unwrap()
    }

    /// A flow of one `aggregate` (one group for everything) into a recorder.
    fn grouping(count: Option<usize>) -> (Arc<Flow<Processor, Arc<Recorder>>>, Arc<Recorder>) {
        let aggregate = one_group(count);
        let recorder = Arc::new(Recorder(Default::default()));
        let flow = Flow::new(
            "test".into(),
            "input.test",
            16,
            vec![ProcessorSlot::new(
                "[0].aggregate".into(),
                Processor::Aggregate(Box::new(aggregate)),
            )],
            vec![crate::core::flow::OutputSlot::new(
                "output".into(),
                recorder.clone(),
                crate::core::retry::RetryConfig::default().policy(false),
                crate::core::metrics::ComponentMetrics::new("test", "output"),
            )],
            None,
            None,
        );
        (Arc::new(flow), recorder)
    }

    /// Three messages in at once; every one's `process` answers only when the group was
    /// delivered, and how long that takes is returned with what the output was given.
    async fn three_in(count: Option<usize>) -> (Duration, Vec<Message>) {
        let (flow, recorder) = grouping(count);
        let started = tokio::time::Instant::now();
        let members: Vec<_> = (0..3)
            .map(|n| {
                let flow = flow.clone();
                tokio::spawn(async move {
                    let value = serde_json::from_value(serde_json::json!({ "n": n })).unwrap();
                    flow.process(Message::new(value)).await
                })
            })
            .collect();
        for member in members {
            let processed = member.await.unwrap().unwrap();
            assert!(matches!(processed, Processed::Delivered(_)));
        }
        let sent = recorder.0.lock().unwrap().clone();
        (started.elapsed(), sent)
    }

    fn ns(group: &Message) -> Vec<i64> {
        let Value::Array(items) = &group.value else {
            panic!("not an array: {:?}", group.value);
        };
        let mut ns: Vec<i64> = items
            .iter()
            .map(|item| match item {
                Value::Object(fields) => match fields["n"] {
                    Value::Integer(n) => n,
                    _ => panic!("no n"),
                },
                _ => panic!("not an object"),
            })
            .collect();
        ns.sort();
        ns
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_short_of_its_count_closes_after_its_period() {
        let (waited, sent) = three_in(Some(10)).await;
        assert_eq!(waited, Duration::from_secs(5));
        assert_eq!(sent.len(), 1, "one message for the group");
        assert_eq!(ns(&sent[0]), [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_group_closes_at_once() {
        let (waited, sent) = three_in(Some(3)).await;
        assert_eq!(waited, Duration::ZERO);
        assert_eq!(sent.len(), 1);
        assert_eq!(ns(&sent[0]), [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_never_joins_a_group_already_complete() {
        let aggregate = one_group(Some(2));
        let n =
            |n: i64| -> Value { serde_json::from_value(serde_json::json!({ "n": n })).unwrap() };
        // The moment between a message completing a group and taking it out of the open ones.
        let full = Arc::new(Open {
            state: Mutex::new(Gathered {
                items: vec![(0, n(0)), (1, n(1))],
                expected: Some(2),
                complete: true,
                ..Default::default()
            }),
            complete: Notify::new(),
            group: Group::new(),
            parts: None,
        });
        aggregate
            .groups
            .lock()
            .unwrap()
            .insert(GroupKey::Text(String::new()), full.clone());
        let mut trail = Trail::default();
        let mut cx = Context {
            flow: "test",
            store: None,
            trail: &mut trail,
            tap: None,
            split: None,
            reads_metadata: true,
        };
        let step = crate::core::Processor::process(&aggregate, Message::new(n(2)), &mut cx)
            .await
            .unwrap();
        let Step::One(next) = step else {
            panic!("the message joined the complete group instead of starting the next one");
        };
        assert_eq!(ns(&next), [2]);
        assert_eq!(full.state.lock().unwrap().items.len(), 2);
    }
}
