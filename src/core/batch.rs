//! Batches: many descriptions, the calls running concurrently on the pooled connections.

use super::cancel::Cancel;
use super::error::Error;
use super::input::parse_array;
use super::options::Options;
use super::ImageRequest;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs one call per description of `descrs` (a JSON array as text, single-quoted, or a `.json`
/// path; each item a description object, or a string in any of the three description forms),
/// `options.parallel` at a time, and returns `{"results": [...]}` in input order, each item
/// exactly what a single call returns. `req.descr` is not used. One failure does not stop the
/// others; a call inside [`Cancel::scope`] gives `cancelled` for the items not yet finished.
pub fn get_images_batch(req: &ImageRequest, descrs: &str, options: &Options) -> String {
    let items = match parse_array(descrs, "descrs") {
        Ok(items) => items,
        Err(err) => return err.to_result_json(),
    };
    let cancel = Cancel::current();
    let next = AtomicUsize::new(0);
    let workers = options.parallel.clamp(1, 16).min(items.len());
    let run_one = |i: usize| -> String {
        if cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            return Error::Cancelled.to_result_json();
        }
        let descr = match &items[i] {
            Value::Object(_) => items[i].to_string(),
            Value::String(text) => text.clone(),
            other => {
                return Error::invalid(
                    "descrs",
                    format!(
                        "descrs[{i}] must be a description object or a string, not {}",
                        super::input::kind_of(other)
                    ),
                )
                .to_result_json()
            }
        };
        let item = ImageRequest {
            descr: &descr,
            ..*req
        };
        let call = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::call(&item, options, None, None)
            }))
            .unwrap_or_else(|_| {
                Err(Error::Internal(
                    "a batch call panicked; please report it".into(),
                ))
            })
        };
        let result = match &cancel {
            Some(token) => token.scope(call),
            None => call(),
        };
        match result {
            Ok(json) => json,
            Err(_) if cancel.as_ref().is_some_and(Cancel::is_cancelled) => {
                Error::Cancelled.to_result_json()
            }
            Err(err) => err.to_result_json(),
        }
    };
    let mut results: Vec<Option<String>> = vec![None; items.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= items.len() {
                            return done;
                        }
                        done.push((i, run_one(i)));
                    }
                })
            })
            .collect();
        for handle in handles {
            if let Ok(done) = handle.join() {
                for (i, result) in done {
                    results[i] = Some(result);
                }
            }
        }
    });
    let mut out = String::from("{\"results\":[");
    for (i, result) in results.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match result {
            Some(json) => out.push_str(json.trim()),
            None => out.push_str(
                &Error::Internal("a batch worker stopped; please report it".into())
                    .to_result_json(),
            ),
        }
    }
    out.push_str("]}");
    out
}
