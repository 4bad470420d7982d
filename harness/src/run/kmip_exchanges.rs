//! The KMIP exchanges of this cell process's signers, counted from the KMIP signer's
//! exchange events ([`EXCHANGE_TARGET`]): the evidence of which operations the server
//! answered how, for the cell's report property
//! [`crate::report::evidence::KMIP_EXCHANGES`].
//!
//! The cell's logging installs [`layer`] (whatever the log level: the events are
//! counted, not printed); [`taken`] hands the count over when the cell ends. The
//! harness's own KMIP client (the oracle's) emits no such events, so only the
//! signers' exchanges count.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use hsm_signers::kmip::EXCHANGE_TARGET;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::report::evidence::{Exchanges, Origin};

/// (operation, result) -> count, since the process started or the last [`taken`].
static SEEN: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());

/// The layer that counts the exchange events, and only them.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    Recorder.with_filter(Targets::new().with_target(EXCHANGE_TARGET, Level::DEBUG))
}

/// The exchanges counted so far, and the count starts again. An operation in
/// `withheld` (the case told the server to withhold it) answered Operation Not
/// Supported is the case's doing ([`Origin::InjectedByCase`]).
pub fn taken(withheld: &[String]) -> Exchanges {
    let seen = std::mem::take(&mut *SEEN.lock().unwrap_or_else(PoisonError::into_inner));
    let mut out = Exchanges::default();
    for ((operation, result), n) in seen {
        let origin = if withheld.contains(&operation) && result.contains("Operation Not Supported")
        {
            Origin::InjectedByCase
        } else {
            Origin::Backend
        };
        out.add(&operation, &result, origin, n);
    }
    out
}

fn count(operation: String, result: String) {
    *SEEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((operation, result))
        .or_insert(0) += 1;
}

struct Recorder;

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let (Some(operation), Some(result)) = (fields.operation, fields.result) {
            count(operation, result);
        }
    }
}

/// The two fields of an exchange event.
#[derive(Default)]
struct Fields {
    operation: Option<String>,
    result: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }

    /// `%value` fields arrive here; their Debug is the value's Display.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "operation" => self.operation = Some(value),
            "result" => self.result = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Exchange events are counted at any log level; other events are not; a withheld
    /// operation refused is the case's doing.
    #[test]
    fn exchange_events_are_counted() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2 {
                tracing::debug!(target: EXCHANGE_TARGET, operation = %"Sign", result = %"Success", "x");
            }
            tracing::debug!(
                target: EXCHANGE_TARGET,
                operation = %"Revoke",
                result = %"Operation Failed (Operation Not Supported)",
                "x"
            );
            tracing::info!(operation = %"Get", result = %"Success", "not an exchange");
        });
        let e = taken(&["Revoke".to_string()]);
        assert_eq!(
            e.to_property(),
            "Revoke=1 Operation Failed (Operation Not Supported) [injected by the case]; Sign=2 Success"
        );
        assert!(taken(&[]).is_empty());
    }
}
