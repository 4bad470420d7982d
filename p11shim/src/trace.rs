//! The call trace: one JSON object per line, appended and written out per call.
//!
//! Only handles, numbers, lengths and names are recorded: never a PIN, data, a
//! signature or an attribute value. See the README for the fields.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use cryptoki_sys::{
    CKR_BUFFER_TOO_SMALL, CKR_OK, CK_ATTRIBUTE, CK_MECHANISM, CK_MECHANISM_TYPE, CK_RV, CK_ULONG,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{mechanism_name, rv_name, user_type_name};

/// The key arguments of one call, built before and after it.
#[derive(Default)]
pub struct Args {
    pub map: Map<String, Value>,
    /// The mechanism the call names, for `hide_mechanisms`.
    pub mechanism: Option<CK_MECHANISM_TYPE>,
    /// The call's return value, set before the outputs are read.
    pub rv: CK_RV,
}

impl Args {
    pub fn num(&mut self, key: &str, v: CK_ULONG) {
        self.map.insert(key.into(), Value::from(v));
    }

    pub fn flag(&mut self, key: &str, v: u8) {
        self.map.insert(key.into(), Value::from(v != 0));
    }

    pub fn text(&mut self, key: &str, v: String) {
        self.map.insert(key.into(), Value::from(v));
    }

    pub fn slot(&mut self, v: CK_ULONG) {
        self.num("slot", v);
    }

    pub fn session(&mut self, v: CK_ULONG) {
        self.num("session", v);
    }

    pub fn user_type(&mut self, v: CK_ULONG) {
        self.text("user_type", user_type_name(v));
    }

    /// The mechanism type (never its parameters).
    ///
    /// # Safety
    /// `m` is null or points to a CK_MECHANISM.
    pub unsafe fn mechanism(&mut self, m: *const CK_MECHANISM) {
        if !m.is_null() {
            self.mechanism_type((*m).mechanism);
        }
    }

    pub fn mechanism_type(&mut self, t: CK_MECHANISM_TYPE) {
        self.mechanism = Some(t);
        self.text("mechanism", mechanism_name(t));
    }

    /// The number of attributes in a template (never their types' values).
    pub fn template(&mut self, key: &str, _t: *const CK_ATTRIBUTE, count: CK_ULONG) {
        self.num(key, count);
    }

    /// An output length or count, once the call has set it.
    ///
    /// # Safety
    /// `p` is null or points to a CK_ULONG.
    pub unsafe fn out_num(&mut self, key: &str, p: *const CK_ULONG) {
        if !p.is_null() && (self.rv == CKR_OK || self.rv == CKR_BUFFER_TOO_SMALL) {
            self.num(key, *p);
        }
    }

    /// An output handle, once the call has succeeded.
    ///
    /// # Safety
    /// `p` is null or points to a CK_ULONG.
    pub unsafe fn out_handle(&mut self, key: &str, p: *const CK_ULONG) {
        if !p.is_null() && self.rv == CKR_OK {
            self.num(key, *p);
        }
    }
}

/// One line of the trace.
pub struct Line<'a> {
    pub function: &'a str,
    pub call: u64,
    pub args: Map<String, Value>,
    /// `None` when the process is aborted inside the call.
    pub rv: Option<CK_RV>,
    pub micros: u64,
    /// The action that answered instead of the module, if one did.
    pub injected: Option<&'a str>,
    pub delay_ms: u64,
}

/// A line as written, fields in this order.
#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    function: &'a str,
    call: u64,
    args: Map<String, Value>,
    rv: Option<String>,
    micros: u64,
    injected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    delay_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The trace file.
pub struct Trace {
    /// The file and the sequence number of the last line written.
    file: Mutex<(File, u64)>,
}

impl Trace {
    pub fn open(path: &Path) -> Result<Trace, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open trace file {}: {e}", path.display()))?;
        Ok(Trace {
            file: Mutex::new((file, 0)),
        })
    }

    /// Appends one line. A line that cannot be written is lost, not an error of the
    /// call: the trace must not change what the module answers.
    pub fn write(&self, line: Line<'_>) {
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, seq) = &mut *guard;
        *seq += 1;
        let record = Record {
            seq: *seq,
            function: line.function,
            call: line.call,
            args: line.args,
            rv: line.rv.map(rv_name),
            micros: line.micros,
            injected: line.injected.is_some(),
            action: line.injected,
            delay_ms: line.delay_ms,
        };
        let Ok(mut text) = serde_json::to_string(&record) else {
            return;
        };
        text.push('\n');
        // One write of the whole line to a file opened for appending.
        let _ = file.write_all(text.as_bytes());
    }
}
