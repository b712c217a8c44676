//! Background copies: a thread runs the pipeline; callers poll progress and cancel through
//! atomics and wait on a condition variable, never holding the GIL.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Kind, Result};
use crate::pipeline::{convert, Control, Request, Stats};

pub struct Job {
    pub ctl: Control,
    started: Instant,
    result: Mutex<Option<Result<Stats>>>,
    cv: Condvar,
}

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub rate_bytes_per_sec: f64,
    pub elapsed_seconds: f64,
}

impl Job {
    /// Starts `req` on a new thread.
    pub fn start(req: Request) -> std::io::Result<Arc<Job>> {
        Job::spawn("spcs-convert", move |ctl| convert(&req, ctl))
    }

    /// Runs `work` on a new thread named `name`, with the job's progress and cancel flag.
    pub fn spawn(
        name: &str,
        work: impl FnOnce(&Control) -> Result<Stats> + Send + 'static,
    ) -> std::io::Result<Arc<Job>> {
        let job = Arc::new(Job {
            ctl: Control::default(),
            started: Instant::now(),
            result: Mutex::new(None),
            cv: Condvar::new(),
        });
        let j = job.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| work(&j.ctl)))
                .unwrap_or_else(|_| Err(Error::new(Kind::Internal, "the copy panicked (a bug in the data mover)")));
            *j.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            j.cv.notify_all();
        })?;
        Ok(job)
    }

    pub fn cancel(&self) {
        self.ctl.cancel.store(true, Ordering::Relaxed);
    }

    pub fn finished(&self) -> bool {
        self.result.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Waits up to `timeout` (forever if None); true once the job has finished.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        while g.is_none() {
            let left = match deadline {
                None => Duration::from_secs(3600),
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => l,
                    _ => return false,
                },
            };
            g = self.cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// The outcome, once finished.
    pub fn with_result<T>(&self, f: impl FnOnce(Option<&Result<Stats>>) -> T) -> T {
        let g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        f(g.as_ref())
    }

    pub fn progress(&self) -> Progress {
        let done = self.ctl.done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        Progress {
            done_bytes: done,
            total_bytes: self.ctl.total.load(Ordering::Relaxed),
            rate_bytes_per_sec: if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 },
            elapsed_seconds: elapsed,
        }
    }
}
