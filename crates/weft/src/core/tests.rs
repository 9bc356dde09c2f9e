//! In-process tests of the async core: the flow runner, the retry loop and fan-out with paused
//! time (`tokio::time::pause`), and the durable dispatcher on a real SQLite store with a
//! [`Clock`] the test moves, on stand-in steps and outputs, in milliseconds of real time
//! whatever the backoffs say. The end-to-end tests run the same behaviour through the binary;
//! these pin it down where it is decided.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::clock::Clock;
use super::durable::{DurableQueue, Limits};
use super::flow::{Flow, FlowError, OutputSlot, Processed, ProcessorSlot};
use super::mapping::Value;
use super::metrics::ComponentMetrics;
use super::retry::{self, Delivered, RetryPolicy};
use super::{Attempt, Context, Message, Output, Processor, Step, StepError};

/// Answers from a script, the last answer repeating; counts its attempts.
struct Scripted {
    answers: Mutex<VecDeque<Attempt>>,
    attempts: AtomicU32,
}

impl Scripted {
    fn new(answers: Vec<Attempt>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            attempts: AtomicU32::new(0),
        })
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Output for Arc<Scripted> {
    async fn send(&self, _message: &Message) -> Attempt {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap_or(Attempt::Delivered)
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}

/// Doubles `.n`; fails a message whose `.n` is negative.
struct Double;

impl Processor for Double {
    async fn process(
        &self,
        mut message: Message,
        _cx: &mut Context<'_>,
    ) -> Result<Step, StepError> {
        let Value::Object(fields) = &mut message.value else {
            return Err(StepError::Failed(super::MappingError(
                "not an object".into(),
            )));
        };
        match fields.get("n") {
            Some(Value::Integer(n)) if *n < 0 => {
                Err(StepError::Failed(super::MappingError("negative".into())))
            }
            Some(Value::Integer(n)) => {
                let doubled = Value::Integer(n * 2);
                fields.insert("n".into(), doubled);
                Ok(Step::One(message))
            }
            _ => Ok(Step::Dropped),
        }
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}

fn unavailable(retry_after: Option<u64>) -> Attempt {
    Attempt::Retryable {
        reason: "503 Service Unavailable".into(),
        retry_after: retry_after.map(Duration::from_secs),
        response: None,
    }
}

fn policy(max_attempts: u32, max_elapsed: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(60),
        max_elapsed,
    }
}

fn flow(outputs: Vec<(&str, Arc<Scripted>, RetryPolicy)>) -> Flow<Double, Arc<Scripted>> {
    flow_on(outputs, None)
}

/// [`flow`], durable on `queue` when given.
fn flow_on(
    outputs: Vec<(&str, Arc<Scripted>, RetryPolicy)>,
    queue: Option<(Arc<DurableQueue>, weft_store::Store)>,
) -> Flow<Double, Arc<Scripted>> {
    let (durable, store) = queue.unzip();
    Flow::new(
        "test".into(),
        "input.test",
        16,
        vec![ProcessorSlot::new("[0].double".into(), Double)],
        outputs
            .into_iter()
            .map(|(id, output, retry)| {
                OutputSlot::new(id.into(), output, retry, ComponentMetrics::new("test", id))
            })
            .collect(),
        durable,
        store,
    )
}

fn message(n: i64) -> Message {
    Message::new(serde_json::from_value(serde_json::json!({ "n": n })).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_retried_delivery_waits_its_backoff_then_delivers() {
    let output = Scripted::new(vec![
        unavailable(None),
        unavailable(None),
        Attempt::Delivered,
    ]);
    let started = Instant::now();
    let slot = OutputSlot::new(
        "output".into(),
        output,
        policy(5, Duration::from_secs(300)),
        ComponentMetrics::new("test", "output"),
    );
    let delivered = retry::deliver(&slot, &message(1)).await;
    let output = &slot.output;
    assert_eq!(delivered, Ok(Delivered::Accepted));
    assert_eq!(output.attempts(), 3);
    // Backoff 1 s then 2 s, each with half of it jittered: between 1.5 s and 3 s in all.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_and_max_elapsed_ends_the_retries() {
    let output = Scripted::new(vec![unavailable(Some(30))]);
    let started = Instant::now();
    let slot = OutputSlot::new(
        "output".into(),
        output,
        policy(100, Duration::from_secs(100)),
        ComponentMetrics::new("test", "output"),
    );
    let delivered = retry::deliver(&slot, &message(1)).await;
    let output = &slot.output;
    let gave_up = delivered.unwrap_err();
    assert!(
        gave_up.reason.contains("would pass max_elapsed"),
        "{gave_up}"
    );
    assert_eq!(
        gave_up.fault,
        retry::Fault::Unavailable {
            retry_after: Some(Duration::from_secs(30))
        },
        "an outage, and the wait its answer asked for"
    );
    // Attempts at 0, 30, 60 and 90 s; a fifth, at 120 s, would pass 100 s.
    assert_eq!(output.attempts(), 4);
    assert_eq!(started.elapsed(), Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn in_place_retries_give_the_answer_or_the_last_reason() {
    let calls = AtomicU32::new(0);
    let answer = retry::in_place(&policy(3, Duration::from_secs(60)), || async {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => Err(unavailable(None)),
            _ => Ok("the answer"),
        }
    })
    .await;
    assert_eq!(answer, Ok("the answer"));
    let failed: Result<(), retry::GaveUp> =
        retry::in_place(&policy(3, Duration::from_secs(60)), || async {
            Err(unavailable(None))
        })
        .await;
    assert!(
        failed
            .unwrap_err()
            .reason
            .contains("gave up after 3 attempts")
    );
}

#[test]
fn a_failure_is_an_outage_only_when_the_other_side_could_not_answer() {
    use retry::{Answer, Fault};
    let answered = |status| Attempt::Retryable {
        reason: String::new(),
        retry_after: None,
        response: Some(Answer {
            status,
            excerpt: String::new(),
        }),
    };
    let outage = Fault::Unavailable { retry_after: None };
    assert_eq!(Fault::of(&unavailable(None)), outage, "no answer at all");
    for status in [429, 502, 503, 504] {
        assert_eq!(Fault::of(&answered(status)), outage, "{status}");
    }
    assert_eq!(Fault::of(&answered(500)), Fault::Upstream);
    let refused = Attempt::Fatal {
        reason: String::new(),
        response: None,
    };
    assert_eq!(Fault::of(&refused), Fault::Upstream);
}

#[tokio::test(start_paused = true)]
async fn a_message_is_delivered_only_when_every_output_took_it() {
    let quick = Scripted::new(vec![Attempt::Delivered]);
    let slow = Scripted::new(vec![
        unavailable(Some(5)),
        unavailable(Some(5)),
        Attempt::Delivered,
    ]);
    let flow = flow(vec![
        (
            "output[0]",
            quick.clone(),
            policy(5, Duration::from_secs(60)),
        ),
        (
            "output[1]",
            slow.clone(),
            policy(5, Duration::from_secs(60)),
        ),
    ]);
    let started = Instant::now();
    let Processed::Delivered(out) = flow.process(message(21)).await.unwrap() else {
        panic!("not delivered");
    };
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!((quick.attempts(), slow.attempts()), (1, 3));
    let Value::Object(fields) = &out[0].value else {
        panic!("not an object");
    };
    assert_eq!(fields["n"], Value::Integer(42));
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_or_a_refusing_output_fails_the_message() {
    let output = Scripted::new(vec![Attempt::Fatal {
        reason: "422 Unprocessable".into(),
        response: None,
    }]);
    let flow = flow(vec![(
        "output[0]",
        output.clone(),
        policy(5, Duration::from_secs(60)),
    )]);
    match flow.process(message(-1)).await {
        Err(FlowError::Processing {
            component, reason, ..
        }) => {
            assert_eq!(component, "[0].double");
            assert!(reason.contains("negative"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(output.attempts(), 0, "a failed message reaches no output");
    match flow.process(message(1)).await {
        Err(FlowError::Delivery {
            component, reason, ..
        }) => {
            assert_eq!(component, "output[0]");
            assert!(reason.contains("422"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A message the step drops is done without any output.
    let dropped = Message::new(serde_json::from_value(serde_json::json!({})).unwrap());
    assert!(matches!(
        flow.process(dropped).await,
        Ok(Processed::Filtered)
    ));
    assert_eq!(output.attempts(), 1);
}

/// A durable flow of `Double` into `output` on a fresh SQLite store, its clock standing still
/// until the test moves it; its delivery workers running until the returned token is
/// cancelled.
struct Durable {
    flow: Arc<Flow<Double, Arc<Scripted>>>,
    queue: Arc<DurableQueue>,
    store: weft_store::Store,
    clock: Clock,
    stop: tokio_util::sync::CancellationToken,
    dir: std::path::PathBuf,
}

impl Durable {
    async fn open(name: &str, output: Arc<Scripted>, retry: RetryPolicy) -> Durable {
        let dir = std::env::temp_dir().join(format!("weft-core-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = weft_store::Store::open_owner(&dir.join("weft.db"), Default::default())
            .await
            .unwrap();
        let clock = Clock::manual(1_700_000_000_000);
        let limits = Limits {
            max_messages: 100,
            max_bytes: 1 << 20,
        };
        let queue = DurableQueue::open(store.clone(), "test".into(), limits, None)
            .await
            .unwrap()
            .with_clock(clock.clone());
        let queue = Arc::new(queue);
        let flow = flow_on(
            vec![("output", output, retry)],
            Some((queue.clone(), store.clone())),
        );
        Durable {
            flow: Arc::new(flow),
            queue,
            store,
            clock,
            stop: Default::default(),
            dir,
        }
    }

    async fn accept(&self, n: i64) {
        let place = self.queue.reserve().expect("room in the queue");
        self.queue.accept(place, &message(n)).await.unwrap();
    }

    fn start(&self) {
        tokio::spawn(super::durable::work(
            self.flow.clone(),
            2,
            self.stop.clone(),
        ));
    }

    /// The first dead letter, once there is one.
    async fn first_dead_letter(&self) -> weft_store::DeadLetter {
        eventually("a dead letter", || async {
            !self.dead_letters().await.is_empty()
        })
        .await;
        self.dead_letters().await.remove(0)
    }

    async fn dead_letters(&self) -> Vec<weft_store::DeadLetter> {
        self.store
            .dead_letters(&Default::default(), 10)
            .await
            .unwrap()
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (in real time: the store answers on its own thread) until `done` holds.
async fn eventually<F: Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Longer than a worker's idle poll: what has not happened by then is not due.
async fn a_while() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_retry_waits_for_its_time_in_the_store_then_delivers() {
    let output = Scripted::new(vec![
        unavailable(None),
        unavailable(Some(30)),
        Attempt::Delivered,
    ]);
    let durable = Durable::open("retry", output.clone(), policy(5, Duration::from_secs(300))).await;
    durable.accept(1).await;
    durable.start();
    eventually("the first attempt", || async { output.attempts() == 1 }).await;
    a_while().await;
    assert_eq!(
        output.attempts(),
        1,
        "retried before its backoff (≤ 1 s) passed"
    );
    durable.clock.advance(Duration::from_secs(1));
    eventually("the second attempt", || async { output.attempts() == 2 }).await;
    // The second answer asked for 30 s.
    durable.clock.advance(Duration::from_secs(29));
    a_while().await;
    assert_eq!(output.attempts(), 2, "retried before Retry-After passed");
    durable.clock.advance(Duration::from_secs(1));
    eventually("the third attempt", || async { output.attempts() == 3 }).await;
    eventually("the ack", || durable.queue.is_drained()).await;
    assert!(durable.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_message_out_of_attempts_is_a_dead_letter_with_its_count() {
    let output = Scripted::new(vec![unavailable(None)]);
    let durable = Durable::open(
        "attempts",
        output.clone(),
        policy(3, Duration::from_secs(300)),
    )
    .await;
    durable.accept(1).await;
    durable.start();
    for attempt in 1..=3 {
        eventually("the next attempt", || async {
            output.attempts() == attempt
        })
        .await;
        durable.clock.advance(Duration::from_secs(60));
    }
    let dead = durable.first_dead_letter().await;
    assert_eq!(durable.dead_letters().await.len(), 1);
    assert_eq!(dead.attempts, 3);
    assert!(dead.failure.reason.contains("503"), "{:?}", dead.failure);
    assert!(durable.queue.is_drained().await);
    a_while().await;
    assert_eq!(output.attempts(), 3, "a dead letter is not delivered again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_elapsed_counts_from_when_the_message_was_accepted() {
    // Accepted, then 20 s pass before any worker runs (a restart, a long queue): with
    // `max_elapsed: 10s` the first failed attempt is also the last.
    let output = Scripted::new(vec![unavailable(None)]);
    let durable = Durable::open(
        "elapsed",
        output.clone(),
        policy(100, Duration::from_secs(10)),
    )
    .await;
    durable.accept(1).await;
    durable.clock.advance(Duration::from_secs(20));
    durable.start();
    let dead = durable.first_dead_letter().await;
    assert_eq!(output.attempts(), 1);
    assert_eq!(dead.attempts, 1);
    assert!(
        dead.failure.reason.contains("max_elapsed"),
        "{:?}",
        dead.failure
    );
}
