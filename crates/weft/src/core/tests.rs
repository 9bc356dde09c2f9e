//! In-process tests of the async core with paused time (`tokio::time::pause`): the flow
//! runner, the retry loop and fan-out, on stand-in steps and outputs, in milliseconds of real
//! time whatever the backoffs say. The end-to-end tests run the same behaviour through the
//! binary; these pin it down where it is decided.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

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
    Flow::new(
        "test".into(),
        "input.test",
        16,
        vec![ProcessorSlot {
            id: "[0].double".into(),
            processor: Double,
        }],
        outputs
            .into_iter()
            .map(|(id, output, retry)| OutputSlot {
                id: id.into(),
                output,
                retry,
                metrics: ComponentMetrics::new("test", id),
            })
            .collect(),
        None,
        None,
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
    let delivered = retry::deliver(
        &output,
        &policy(5, Duration::from_secs(300)),
        &ComponentMetrics::new("test", "output"),
        "output",
        &message(1),
    )
    .await;
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
    let delivered = retry::deliver(
        &output,
        &policy(100, Duration::from_secs(100)),
        &ComponentMetrics::new("test", "output"),
        "output",
        &message(1),
    )
    .await;
    let reason = delivered.unwrap_err();
    assert!(reason.contains("would pass max_elapsed"), "{reason}");
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
    let failed: Result<(), String> =
        retry::in_place(&policy(3, Duration::from_secs(60)), || async {
            Err(unavailable(None))
        })
        .await;
    assert!(failed.unwrap_err().contains("gave up after 3 attempts"));
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
