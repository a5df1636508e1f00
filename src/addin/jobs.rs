//! Asynchronous calls: `StartGetImages` runs a call on a worker thread owned by the component
//! and returns a job id at once; progress and completion reach 1C as external events
//! (`IAddInDefBase::ExternalEvent`, source `OPI_OpenAI`) sent from the worker thread, as 1C
//! expects.
//!
//! Lifetime rules (the host's objects must never be used after they are gone):
//! - each worker owns its request and an [`EventSink`]; it never touches the component;
//! - [`Jobs::shutdown`] (from `Done`, the destructors and `Drop`) first closes the sink's gate
//!   (no event starts after it, and it waits for one in progress), then cancels every job
//!   (blocked reads return at once, see [`crate::Cancel`]) and joins every worker thread.
//!   So no callback reaches a destroyed object and no thread outlives the component.

use super::host::Host;
use crate::Cancel;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The source name of every external event.
pub(crate) const EVENT_SOURCE: &str = "OPI_OpenAI";

/// The event buffer depth asked for before the first job: a job sends up to three
/// `partial_image` events and one `done` or `failed`, and several jobs may finish together
/// (1C's default depth is small; events beyond it are lost).
pub(crate) const EVENT_BUFFER_DEPTH: i32 = 256;

/// At most this many jobs of one object call the server at once; later ones wait (still
/// cancellable) for a slot. The batch's `parallel` has the same upper bound.
pub(crate) const MAX_RUNNING: usize = 16;

/// The running-call slots of one object, shared with its workers.
#[derive(Default)]
struct Slots {
    running: Mutex<usize>,
    freed: Condvar,
}

/// A taken slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    /// Waits for a free slot; `None` when `cancel` is cancelled first.
    fn acquire<'a>(&'a self, cancel: &Cancel) -> Option<Slot<'a>> {
        let mut running = lock(&self.running);
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if *running < MAX_RUNNING {
                break;
            }
            running = self
                .freed
                .wait_timeout(running, Duration::from_millis(20))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *running += 1;
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.running) -= 1;
        self.0.freed.notify_one();
    }
}

/// Job ids are unique in the process (events from two component objects share one handler).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One job, shared by the component and its worker.
pub(crate) struct Job {
    /// Cancels the job's call.
    cancel: Cancel,
    /// The result JSON, once the call finished.
    result: Mutex<Option<String>>,
    /// Signalled when `result` is set.
    finished: Condvar,
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.result.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores the result and wakes every waiter.
    fn finish(&self, result: String) {
        *self.lock() = Some(result);
        self.finished.notify_all();
    }
}

/// Where a worker sends its events: the host, behind a gate that [`Jobs::shutdown`] closes.
#[derive(Clone)]
pub(crate) struct EventSink {
    /// The host connection, `None` once the gate is closed. A read lock is held for the whole
    /// `ExternalEvent` call, so closing (a write lock) waits for an event in progress.
    host: Arc<RwLock<Option<SendHost>>>,
}

/// The host pointer, sent to worker threads: the Native API has workers call
/// `ExternalEvent`; the gate keeps every call inside the host's lifetime.
#[derive(Clone, Copy)]
struct SendHost(Host);
// SAFETY: the host interface may be called from any thread (1C's documented use of
// ExternalEvent); the gate ends every use before the host goes away.
unsafe impl Send for SendHost {}
// SAFETY: as above.
unsafe impl Sync for SendHost {}

impl EventSink {
    /// Sends one event; a closed gate drops it.
    pub(crate) fn emit(&self, message: &str, data: &serde_json::Value) {
        let gate = self.host.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(SendHost(host)) = *gate {
            host.external_event(EVENT_SOURCE, message, &data.to_string());
        }
    }
}

/// A job's entry in the component.
struct Entry {
    job: Arc<Job>,
    thread: Option<JoinHandle<()>>,
}

/// The component's jobs and worker threads.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: Mutex<HashMap<String, Entry>>,
    /// Threads of jobs already handed over by `take_result`, joined when finished.
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// The gate shared with the workers (created with the first job).
    sink: Mutex<Option<EventSink>>,
    /// Limits the calls running at once to [`MAX_RUNNING`].
    slots: Arc<Slots>,
    /// The component's temporary folder for streamed images when no `save_dir` is set
    /// (named on first use, created by the call that writes to it, removed at shutdown).
    temp_dir: Mutex<Option<PathBuf>>,
}

/// Numbers the components' temporary folders within the process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(1);

/// What the worker runs: the call, with the job's id and the event sink; returns the result.
pub(crate) type Work = Box<dyn FnOnce(&str, &EventSink) -> String + Send>;

/// Why a job id was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JobError {
    /// No job has that id (never started, or its result was already taken).
    Unknown,
    /// The job has not finished.
    Running,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Jobs {
    /// Starts `work` on a new worker thread and returns the job's id. `host` receives the
    /// events (none when `None`). On the first job, asks the host for a deeper event buffer.
    pub(crate) fn start(&self, host: Option<Host>, work: Work) -> std::io::Result<String> {
        self.reap();
        let sink = {
            let mut sink = lock(&self.sink);
            sink.get_or_insert_with(|| {
                if let Some(host) = host {
                    if host.event_buffer_depth() < EVENT_BUFFER_DEPTH {
                        host.set_event_buffer_depth(EVENT_BUFFER_DEPTH);
                    }
                }
                EventSink {
                    host: Arc::new(RwLock::new(host.map(SendHost))),
                }
            })
            .clone()
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed).to_string();
        let job = Arc::new(Job {
            cancel: Cancel::new(),
            result: Mutex::new(None),
            finished: Condvar::new(),
        });
        let worker_job = Arc::clone(&job);
        let worker_id = id.clone();
        let slots = Arc::clone(&self.slots);
        let thread = std::thread::Builder::new()
            .name(format!("opi_openai job {id}"))
            .spawn(move || run_job(&worker_id, &worker_job, &sink, &slots, work))?;
        lock(&self.jobs).insert(
            id.clone(),
            Entry {
                job,
                thread: Some(thread),
            },
        );
        Ok(id)
    }

    fn job(&self, id: &str) -> Result<Arc<Job>, JobError> {
        lock(&self.jobs)
            .get(id)
            .map(|e| Arc::clone(&e.job))
            .ok_or(JobError::Unknown)
    }

    /// The component's temporary folder for streamed images: `opi_openai-<pid>-<n>` in the
    /// system's temporary folder, removed (with everything in it) at shutdown.
    pub(crate) fn temp_dir(&self) -> PathBuf {
        lock(&self.temp_dir)
            .get_or_insert_with(|| {
                std::env::temp_dir().join(format!(
                    "opi_openai-{}-{}",
                    std::process::id(),
                    NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
                ))
            })
            .clone()
    }

    /// Waits up to `timeout` for the job; true when it has finished.
    pub(crate) fn wait(&self, id: &str, timeout: Duration) -> Result<bool, JobError> {
        let job = self.job(id)?;
        let deadline = Instant::now().checked_add(timeout);
        let mut result = job.lock();
        while result.is_none() {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Ok(false);
            }
            result = job
                .finished
                .wait_timeout(result, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(true)
    }

    /// Cancels the job: true when it was still running (it then finishes with a `cancelled`
    /// error and a `failed` event), false when it had already finished.
    pub(crate) fn cancel(&self, id: &str) -> Result<bool, JobError> {
        let job = self.job(id)?;
        let running = job.lock().is_none();
        if running {
            job.cancel.cancel();
        }
        Ok(running)
    }

    /// Hands over a finished job's result and forgets the job.
    pub(crate) fn take_result(&self, id: &str) -> Result<String, JobError> {
        let mut jobs = lock(&self.jobs);
        let entry = jobs.get(id).ok_or(JobError::Unknown)?;
        let result = entry.job.lock().clone().ok_or(JobError::Running)?;
        if let Some(mut entry) = jobs.remove(id) {
            if let Some(thread) = entry.thread.take() {
                lock(&self.retired).push(thread);
            }
        }
        Ok(result)
    }

    /// How many jobs are known (running, or finished with their result not yet taken).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.jobs).len()
    }

    /// Joins the retired threads that have finished.
    fn reap(&self) {
        let mut retired = lock(&self.retired);
        let (done, running): (Vec<_>, Vec<_>) = retired.drain(..).partition(|t| t.is_finished());
        *retired = running;
        drop(retired);
        for thread in done {
            let _ = thread.join();
        }
    }

    /// Stops everything: closes the event gate (no event after this returns), cancels every
    /// running job, joins every worker thread and forgets the jobs. Idempotent.
    pub(crate) fn shutdown(&self) {
        if let Some(sink) = lock(&self.sink).take() {
            *sink.host.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
        let entries: Vec<Entry> = lock(&self.jobs).drain().map(|(_, e)| e).collect();
        for entry in &entries {
            entry.job.cancel.cancel();
        }
        let retired: Vec<_> = lock(&self.retired).drain(..).collect();
        for thread in entries.into_iter().filter_map(|e| e.thread).chain(retired) {
            let _ = thread.join();
        }
        if let Some(dir) = lock(&self.temp_dir).take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A worker's life: run the call inside the job's cancel scope and the panic boundary, store
/// the result, then send `done` (a result without an `error` key) or `failed`.
fn run_job(id: &str, job: &Job, sink: &EventSink, slots: &Slots, work: Work) {
    let result = crate::boundary::catch(
        |e| e.to_result_json(),
        || {
            let Some(_slot) = slots.acquire(&job.cancel) else {
                return crate::Error::Cancelled.to_result_json();
            };
            job.cancel.scope(|| {
                crate::boundary::panic_probe("job");
                work(id, sink)
            })
        },
    );
    // Whatever failure a cancelled call ended with (a socket shut down under it), it was
    // cancelled.
    let result = if job.cancel.is_cancelled() && error_code(&result).is_some() {
        crate::Error::Cancelled.to_result_json()
    } else {
        result
    };
    let error_code = error_code(&result);
    job.finish(result);
    crate::boundary::catch(
        |_| (),
        || match error_code {
            None => sink.emit("done", &serde_json::json!({ "job": id })),
            Some(code) => sink.emit("failed", &serde_json::json!({ "job": id, "code": code })),
        },
    );
}

/// A result's `error.code` (or `error.type`, or `"error"`) when it is an error result.
fn error_code(result: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(result).ok()?;
    let error = value.get("error")?;
    if error.is_null() {
        return None;
    }
    Some(
        error
            .get("code")
            .and_then(|c| c.as_str())
            .or_else(|| error.get("type").and_then(|t| t.as_str()))
            .unwrap_or("error")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_on_its_own_thread_and_its_result_is_taken_once() {
        let jobs = Jobs::default();
        let id = jobs
            .start(None, Box::new(|id, _| format!(r#"{{"job":"{id}"}}"#)))
            .unwrap();
        assert_eq!(jobs.wait(&id, Duration::from_secs(10)), Ok(true));
        assert_eq!(
            jobs.take_result(&id).unwrap(),
            format!(r#"{{"job":"{id}"}}"#)
        );
        assert_eq!(jobs.take_result(&id), Err(JobError::Unknown));
        assert_eq!(jobs.len(), 0);
    }

    #[test]
    fn wait_times_out_while_the_job_runs_and_shutdown_cancels_it() {
        let jobs = Jobs::default();
        let id = jobs
            .start(
                None,
                Box::new(|_, _| {
                    let cancel = Cancel::current().expect("the job runs in its cancel scope");
                    while !cancel.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    crate::Error::Cancelled.to_result_json()
                }),
            )
            .unwrap();
        assert_eq!(jobs.wait(&id, Duration::from_millis(50)), Ok(false));
        assert_eq!(jobs.take_result(&id), Err(JobError::Running));
        assert_eq!(jobs.cancel(&id), Ok(true));
        assert_eq!(jobs.wait(&id, Duration::from_secs(10)), Ok(true));
        assert_eq!(jobs.cancel(&id), Ok(false));
        assert!(jobs.take_result(&id).unwrap().contains("cancelled"));
        jobs.shutdown();
    }

    #[test]
    fn at_most_max_running_jobs_call_at_once_and_waiting_ones_cancel() {
        use std::sync::atomic::AtomicUsize;
        let jobs = Jobs::default();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let ids: Vec<String> = (0..MAX_RUNNING + 3)
            .map(|_| {
                let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
                let work: Work = Box::new(move |_, _| {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    let cancel = Cancel::current().expect("in the job's scope");
                    while !cancel.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                    crate::Error::Cancelled.to_result_json()
                });
                jobs.start(None, work).unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while now.load(Ordering::SeqCst) < MAX_RUNNING && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(now.load(Ordering::SeqCst), MAX_RUNNING);
        // A waiting job ends as soon as it is cancelled, without ever running.
        let last = ids.last().unwrap();
        assert_eq!(jobs.cancel(last), Ok(true));
        assert_eq!(jobs.wait(last, Duration::from_secs(5)), Ok(true));
        assert!(jobs.take_result(last).unwrap().contains("cancelled"));
        jobs.shutdown();
        assert_eq!(peak.load(Ordering::SeqCst), MAX_RUNNING);
        assert_eq!(now.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn error_results_are_recognised() {
        assert_eq!(error_code(r#"{"data":[]}"#), None);
        assert_eq!(
            error_code(r#"{"error":{"code":"timeout"}}"#).as_deref(),
            Some("timeout")
        );
        assert_eq!(
            error_code(r#"{"error":{"type":"invalid_request_error","code":null}}"#).as_deref(),
            Some("invalid_request_error")
        );
    }
}
