//! A PKCS#11 module that passes every call to a real module, writes a trace of the
//! calls and, when its configuration says so, misbehaves on cue.
//!
//! The shim exports only `C_GetFunctionList` (PKCS#11 2.40). The first call reads the
//! configuration named by [`config::CONFIG_VAR`], loads the real module, calls its
//! `C_GetFunctionList` and hands out the shim's own function list, in which every entry
//! the real module fills forwards to it (and every entry it leaves empty stays empty).
//! A bad configuration or a module that cannot be loaded is reported on stderr and
//! answered with CKR_GENERAL_ERROR.
//!
//! With no rules and no hidden mechanisms the shim only adds a trace line: every
//! argument and every return value passes unchanged. No panic crosses the C boundary
//! (a panic becomes CKR_GENERAL_ERROR).
//!
//! The crate is also an rlib so that the harness and the tests can write configurations
//! with [`config::Config`].

pub mod config;
mod names;
mod trace;

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use cryptoki_sys::{
    CKF_OS_LOCKING_OK, CKR_ARGUMENTS_BAD, CKR_BUFFER_TOO_SMALL, CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CKR_MECHANISM_INVALID, CKR_OK, CK_ATTRIBUTE,
    CK_BBOOL, CK_BYTE, CK_C_INITIALIZE_ARGS, CK_FLAGS, CK_FUNCTION_LIST, CK_INFO, CK_MECHANISM,
    CK_MECHANISM_INFO, CK_MECHANISM_TYPE, CK_NOTIFY, CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE,
    CK_SESSION_INFO, CK_SLOT_ID, CK_SLOT_INFO, CK_TOKEN_INFO, CK_ULONG, CK_USER_TYPE, CK_UTF8CHAR,
};
use libloading::Library;

use config::{Action, Config, Effect, Plan, CONFIG_VAR};
use trace::{Args, Line, Trace};

/// The loaded shim: configuration, real module, counters, trace.
struct Shim {
    /// Kept loaded for the life of the process.
    _library: Library,
    /// The real module's function list (a copy: it is only function pointers).
    real: CK_FUNCTION_LIST,
    /// The list handed out by the shim's C_GetFunctionList.
    list: CK_FUNCTION_LIST,
    /// The rules in force; replaced when the configuration file changes.
    plan: RwLock<Arc<Plan>>,
    /// Calls so far, by index in [`FUNCTIONS`].
    calls: Vec<AtomicU64>,
    /// `calls` when the rules in force were read: rules count calls from there.
    base: Vec<AtomicU64>,
    trace: Option<Trace>,
    /// The configuration file, and what was last read from it (its stamp and text).
    config: PathBuf,
    seen: Mutex<(Option<(SystemTime, u64)>, String)>,
}

impl Shim {
    fn plan(&self) -> Arc<Plan> {
        self.plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the configuration again when the file changed, so that a test can change
    /// the injected faults of a running process. Only the rules and hidden mechanisms
    /// change; a new `module` or `trace` is refused (the old rules stay, the reason goes
    /// to stderr), as is a file that does not parse. Rules count calls from the reload.
    fn refresh(&self) {
        let Ok(meta) = std::fs::metadata(&self.config) else {
            return;
        };
        let stamp = meta.modified().ok().map(|m| (m, meta.len()));
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.0 == stamp {
            return;
        }
        seen.0 = stamp;
        let Ok(text) = std::fs::read_to_string(&self.config) else {
            return;
        };
        if text == seen.1 {
            return;
        }
        let current = self.plan();
        match Config::from_toml(&text).and_then(|c| c.plan()) {
            Ok(p) if p.module == current.module && p.trace == current.trace => {
                if p.reconnect != current.reconnect {
                    self.reconnect();
                }
                for (b, c) in self.base.iter().zip(&self.calls) {
                    b.store(c.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                *self.plan.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(p);
                seen.1 = text;
            }
            Ok(_) => eprintln!(
                "p11shim: {}: module and trace cannot change in a running process; the old rules stay",
                self.config.display()
            ),
            Err(e) => eprintln!(
                "p11shim: {}: {e}; the old rules stay",
                self.config.display()
            ),
        }
    }
}

impl Shim {
    /// C_Finalize and C_Initialize (OS locking) on the real module, untraced, when it
    /// was initialised: see [`Config::reconnect`]. Failures go to stderr; the caller's
    /// next call meets whatever state the module is in.
    fn reconnect(&self) {
        let (Some(finalize), Some(initialize)) = (self.real.C_Finalize, self.real.C_Initialize)
        else {
            return;
        };
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        // SAFETY: the real module's own entry points, with the arguments PKCS#11 defines
        // (NULL for C_Finalize; an initialised CK_C_INITIALIZE_ARGS for C_Initialize).
        let rv = unsafe {
            if finalize(ptr::null_mut()) == CKR_CRYPTOKI_NOT_INITIALIZED {
                return;
            }
            initialize((&mut args as *mut CK_C_INITIALIZE_ARGS).cast())
        };
        if rv != CKR_OK {
            eprintln!(
                "p11shim: reconnecting the real module: C_Initialize answered {}",
                config::rv_name(rv)
            );
        }
    }
}

static SHIM: OnceLock<Result<Shim, String>> = OnceLock::new();

fn loaded() -> Option<&'static Shim> {
    SHIM.get().and_then(|r| r.as_ref().ok())
}

/// Reads the configuration and loads the real module; errors go to stderr as well.
fn load() -> Result<Shim, String> {
    let shim = try_load();
    if let Err(e) = &shim {
        eprintln!("p11shim: {e}");
    }
    shim
}

fn try_load() -> Result<Shim, String> {
    let path = std::env::var_os(CONFIG_VAR).ok_or_else(|| {
        format!("{CONFIG_VAR} is not set: it must name the shim's TOML configuration file")
    })?;
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let stamp = std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok().map(|t| (t, m.len())));
    let plan = Config::from_toml(&text)
        .and_then(|c| c.plan())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let trace = plan.trace.as_deref().map(Trace::open).transpose()?;
    let module = plan.module.display().to_string();
    // SAFETY: loading a PKCS#11 module runs its initialisers, as any PKCS#11
    // application does; the configuration names the module to trust.
    let library = unsafe { Library::new(&plan.module) }
        .map_err(|e| format!("cannot load module {module}: {e}"))?;
    let real = unsafe {
        let get = library
            .get::<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV>(
                b"C_GetFunctionList\0",
            )
            .map_err(|e| format!("module {module} has no C_GetFunctionList: {e}"))?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        let rv = get(&mut list);
        if rv != CKR_OK || list.is_null() {
            return Err(format!(
                "C_GetFunctionList of {module} answered {}",
                config::rv_name(rv)
            ));
        }
        *list
    };
    Ok(Shim {
        _library: library,
        list: forward::list(&real),
        real,
        plan: RwLock::new(Arc::new(plan)),
        calls: FUNCTIONS.iter().map(|_| AtomicU64::new(0)).collect(),
        base: FUNCTIONS.iter().map(|_| AtomicU64::new(0)).collect(),
        trace,
        config: path.to_path_buf(),
        seen: Mutex::new((stamp, text)),
    })
}

/// One call through the shim: count it, describe it, apply the rules, forward it,
/// read its outputs and trace it. A panic anywhere becomes CKR_GENERAL_ERROR.
fn intercept(
    function: usize,
    describe: impl FnOnce(&mut Args),
    forward: impl FnOnce(&Shim, &mut Args) -> CK_RV,
    outputs: impl FnOnce(&mut Args),
    end: impl FnOnce(&Shim),
) -> CK_RV {
    let call = AssertUnwindSafe(move || {
        let Some(shim) = loaded() else {
            return CKR_GENERAL_ERROR;
        };
        let start = Instant::now();
        shim.refresh();
        let plan = shim.plan();
        let n = shim.calls[function].fetch_add(1, Ordering::Relaxed) + 1;
        let mut args = Args::default();
        describe(&mut args);
        let since_reload = n
            .saturating_sub(shim.base[function].load(Ordering::Relaxed))
            .max(1);
        let decision = plan.decide(function, since_reload);
        let log = |args: Args, rv: Option<CK_RV>, injected: Option<&str>| {
            if let Some(trace) = &shim.trace {
                trace.write(Line {
                    function: FUNCTIONS[function],
                    call: n,
                    args: args.map,
                    rv,
                    micros: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
                    injected,
                    delay_ms: decision.delay_ms,
                });
            }
        };
        if decision.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(decision.delay_ms));
        }
        let (rv, injected) = match decision.answer {
            Some((Action::Abort, _)) | Some((_, Effect::Abort)) => {
                log(args, None, Some("abort"));
                std::process::abort();
            }
            Some((_, Effect::Pretend)) => (CKR_OK, Some("pretend")),
            Some((action, Effect::Return(rv))) => {
                // A real module ends the active operation when such a call fails;
                // so does the shim, or the session would answer
                // CKR_OPERATION_ACTIVE to the next C_*Init.
                end(shim);
                (rv, Some(action.name()))
            }
            _ if args.mechanism.is_some_and(|m| plan.is_hidden(m)) => {
                (CKR_MECHANISM_INVALID, Some("hide_mechanisms"))
            }
            _ => (forward(shim, &mut args), None),
        };
        args.rv = rv;
        if injected.is_none() {
            outputs(&mut args);
        }
        log(args, Some(rv), injected);
        rv
    });
    catch_unwind(call).unwrap_or(CKR_GENERAL_ERROR)
}

/// The shim's entry point (PKCS#11 2.40, section 5.4).
///
/// # Safety
///
/// `list` must be null or point to storage for one pointer, as PKCS#11 requires.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    let ready = catch_unwind(|| SHIM.get_or_init(load).is_ok()).unwrap_or(false);
    if !ready {
        return CKR_GENERAL_ERROR;
    }
    intercept(
        forward::Fid::C_GetFunctionList as usize,
        |_| {},
        |shim, _| {
            if list.is_null() {
                return CKR_ARGUMENTS_BAD;
            }
            // Handed out read-only, as PKCS#11 says the application must treat it.
            *list = ptr::from_ref(&shim.list).cast_mut();
            CKR_OK
        },
        |_| {},
        |_| {},
    )
}

/// C_GetMechanismList without the hidden mechanisms. The module's whole list is read,
/// filtered, and answered with the two-call convention of PKCS#11 (null list: the
/// count; list too short: CKR_BUFFER_TOO_SMALL and the count).
unsafe fn mechanism_list(
    shim: &Shim,
    args: &mut Args,
    real: unsafe extern "C" fn(CK_SLOT_ID, *mut CK_MECHANISM_TYPE, *mut CK_ULONG) -> CK_RV,
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    let plan = shim.plan();
    if plan.hidden.is_empty() {
        return real(slot, list, count);
    }
    if count.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let mut all: Vec<CK_MECHANISM_TYPE> = Vec::new();
    loop {
        let mut n: CK_ULONG = 0;
        let rv = real(slot, ptr::null_mut(), &mut n);
        if rv != CKR_OK {
            return rv;
        }
        all.resize(n as usize, 0);
        let rv = real(slot, all.as_mut_ptr(), &mut n);
        match rv {
            CKR_OK => {
                all.truncate(n as usize);
                break;
            }
            // The list grew between the two calls: ask again.
            CKR_BUFFER_TOO_SMALL => continue,
            other => return other,
        }
    }
    let before = all.len();
    all.retain(|m| !plan.is_hidden(*m));
    args.num("hidden", (before - all.len()) as CK_ULONG);
    let len = all.len() as CK_ULONG;
    if list.is_null() {
        *count = len;
        return CKR_OK;
    }
    if *count < len {
        *count = len;
        return CKR_BUFFER_TOO_SMALL;
    }
    ptr::copy_nonoverlapping(all.as_ptr(), list, all.len());
    *count = len;
    CKR_OK
}

type SinglePart = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    *mut CK_BYTE,
    CK_ULONG,
    *mut CK_BYTE,
    *mut CK_ULONG,
) -> CK_RV;
type Final = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG) -> CK_RV;

/// Ends an operation by running a single-part call (C_Sign, C_Encrypt, ...) on the
/// caller's input into a scratch buffer that is then dropped.
unsafe fn finish_single(
    f: Option<SinglePart>,
    session: CK_SESSION_HANDLE,
    input: *mut CK_BYTE,
    input_len: CK_ULONG,
) {
    let Some(f) = f else { return };
    let mut n: CK_ULONG = 0;
    // An error here has ended the operation already.
    if f(session, input, input_len, ptr::null_mut(), &mut n) == CKR_OK {
        let mut scratch = vec![0u8; n as usize];
        f(session, input, input_len, scratch.as_mut_ptr(), &mut n);
    }
}

/// Ends a multi-part operation with its C_*Final into a scratch buffer.
unsafe fn finish_final(f: Option<Final>, session: CK_SESSION_HANDLE) {
    let Some(f) = f else { return };
    let mut n: CK_ULONG = 0;
    if f(session, ptr::null_mut(), &mut n) == CKR_OK {
        let mut scratch = vec![0u8; n as usize];
        f(session, scratch.as_mut_ptr(), &mut n);
    }
}

/// Defines one forwarding function per PKCS#11 2.40 function, [`FUNCTIONS`], the
/// function indices and the shim's function list.
///
/// Each entry: the C signature, a block that records the key arguments before the
/// call, optionally (`then`) one that records outputs after it, optionally (`via`) a
/// function that stands between the shim and the real entry, and optionally (`ends`)
/// how to end the module's active operation when the shim fails the call.
macro_rules! forwarders {
    ($(
        $name:ident ( $($arg:ident : $ty:ty),* $(,)? )
            |$a:ident| $pre:block
            $(then |$b:ident| $post:block)?
            $(via $via:ident)?
            $(ends |$s:ident| $end:block)?
        ;
    )*) => {
        /// The functions the shim knows, in function-list order; the index is the
        /// function's number in the shim's counters.
        pub const FUNCTIONS: &[&str] = &["C_GetFunctionList", $(stringify!($name)),*];

        #[allow(non_snake_case, clippy::too_many_arguments)]
        mod forward {
            use super::*;

            #[allow(non_camel_case_types, dead_code)]
            #[derive(Clone, Copy)]
            pub enum Fid {
                C_GetFunctionList,
                $($name),*
            }

            /// The shim's list for a module whose list is `real`.
            pub fn list(real: &CK_FUNCTION_LIST) -> CK_FUNCTION_LIST {
                let mut list = CK_FUNCTION_LIST {
                    version: real.version,
                    ..Default::default()
                };
                list.C_GetFunctionList = Some(super::C_GetFunctionList);
                $(
                    if real.$name.is_some() {
                        list.$name = Some($name);
                    }
                )*
                list
            }

            $(
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                    intercept(
                        Fid::$name as usize,
                        |$a: &mut Args| $pre,
                        |shim: &Shim, args: &mut Args| {
                            let _ = &args;
                            let Some(real) = shim.real.$name else {
                                return CKR_FUNCTION_NOT_SUPPORTED;
                            };
                            forwarders!(@call real shim args ($($arg),*) $($via)?)
                        },
                        forwarders!(@post $(|$b| $post)?),
                        forwarders!(@end $(|$s| $end)?),
                    )
                }
            )*
        }
    };
    (@call $real:ident $shim:ident $args:ident ($($arg:ident),*)) => {
        $real($($arg),*)
    };
    (@call $real:ident $shim:ident $args:ident ($($arg:ident),*) $via:ident) => {
        $via($shim, $args, $real, $($arg),*)
    };
    (@post) => { |_: &mut Args| {} };
    (@post |$b:ident| $post:block) => { |$b: &mut Args| $post };
    (@end) => { |_: &Shim| {} };
    (@end |$s:ident| $end:block) => { |$s: &Shim| $end };
}

forwarders! {
    C_Initialize(init_args: *mut c_void) |a| {
        if !init_args.is_null() {
            a.num("flags", (*init_args.cast::<CK_C_INITIALIZE_ARGS>()).flags);
        }
    };
    C_Finalize(reserved: *mut c_void) |_a| {};
    C_GetInfo(info: *mut CK_INFO) |_a| {};
    C_GetSlotList(token_present: CK_BBOOL, list: *mut CK_SLOT_ID, count: *mut CK_ULONG) |a| {
        a.flag("token_present", token_present);
        a.flag("list", u8::from(!list.is_null()));
    } then |a| { a.out_num("count", count); };
    C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) |a| { a.slot(slot); };
    C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) |a| { a.slot(slot); };
    C_GetMechanismList(slot: CK_SLOT_ID, list: *mut CK_MECHANISM_TYPE, count: *mut CK_ULONG) |a| {
        a.slot(slot);
        a.flag("list", u8::from(!list.is_null()));
    } then |a| { a.out_num("count", count); } via mechanism_list;
    C_GetMechanismInfo(slot: CK_SLOT_ID, mechanism: CK_MECHANISM_TYPE, info: *mut CK_MECHANISM_INFO) |a| {
        a.slot(slot);
        a.mechanism_type(mechanism);
    };
    C_InitToken(slot: CK_SLOT_ID, so_pin: *mut CK_UTF8CHAR, so_pin_len: CK_ULONG, label: *mut CK_UTF8CHAR) |a| {
        a.slot(slot);
    };
    C_InitPIN(session: CK_SESSION_HANDLE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG) |a| { a.session(session); };
    C_SetPIN(session: CK_SESSION_HANDLE, old: *mut CK_UTF8CHAR, old_len: CK_ULONG, new: *mut CK_UTF8CHAR, new_len: CK_ULONG) |a| {
        a.session(session);
    };
    C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, application: *mut c_void, notify: CK_NOTIFY, session: *mut CK_SESSION_HANDLE) |a| {
        a.slot(slot);
        a.num("flags", flags);
    } then |a| { a.out_handle("session", session); };
    C_CloseSession(session: CK_SESSION_HANDLE) |a| { a.session(session); };
    C_CloseAllSessions(slot: CK_SLOT_ID) |a| { a.slot(slot); };
    C_GetSessionInfo(session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO) |a| { a.session(session); };
    C_GetOperationState(session: CK_SESSION_HANDLE, state: *mut CK_BYTE, state_len: *mut CK_ULONG) |a| {
        a.session(session);
    } then |a| { a.out_num("state_len", state_len); };
    C_SetOperationState(session: CK_SESSION_HANDLE, state: *mut CK_BYTE, state_len: CK_ULONG, encryption_key: CK_OBJECT_HANDLE, authentication_key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.num("state_len", state_len);
        a.num("encryption_key", encryption_key);
        a.num("authentication_key", authentication_key);
    };
    C_Login(session: CK_SESSION_HANDLE, user_type: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG) |a| {
        // Never the PIN, nor its length.
        a.session(session);
        a.user_type(user_type);
    };
    C_Logout(session: CK_SESSION_HANDLE) |a| { a.session(session); };
    C_CreateObject(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, object: *mut CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.template("attributes", template, count);
    } then |a| { a.out_handle("object", object); };
    C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, new_object: *mut CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.num("object", object);
        a.template("attributes", template, count);
    } then |a| { a.out_handle("new_object", new_object); };
    C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.num("object", object);
    };
    C_GetObjectSize(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, size: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("object", object);
    } then |a| { a.out_num("size", size); };
    C_GetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG) |a| {
        a.session(session);
        a.num("object", object);
        a.template("attributes", template, count);
    };
    C_SetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG) |a| {
        a.session(session);
        a.num("object", object);
        a.template("attributes", template, count);
    };
    C_FindObjectsInit(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG) |a| {
        a.session(session);
        a.template("attributes", template, count);
    };
    C_FindObjects(session: CK_SESSION_HANDLE, objects: *mut CK_OBJECT_HANDLE, max_count: CK_ULONG, found: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("max_count", max_count);
    } then |a| { a.out_num("found", found); };
    C_FindObjectsFinal(session: CK_SESSION_HANDLE) |a| { a.session(session); };
    C_EncryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("key", key);
    };
    C_Encrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, encrypted: *mut CK_BYTE, encrypted_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("data_len", data_len);
    } then |a| { a.out_num("encrypted_len", encrypted_len); }
    ends |s| { finish_single(s.real.C_Encrypt, session, data, data_len); };
    C_EncryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, encrypted: *mut CK_BYTE, encrypted_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("part_len", part_len);
    } then |a| { a.out_num("encrypted_len", encrypted_len); }
    ends |s| { finish_final(s.real.C_EncryptFinal, session); };
    C_EncryptFinal(session: CK_SESSION_HANDLE, encrypted: *mut CK_BYTE, encrypted_len: *mut CK_ULONG) |a| {
        a.session(session);
    } then |a| { a.out_num("encrypted_len", encrypted_len); }
    ends |s| { finish_final(s.real.C_EncryptFinal, session); };
    C_DecryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("key", key);
    };
    C_Decrypt(session: CK_SESSION_HANDLE, encrypted: *mut CK_BYTE, encrypted_len: CK_ULONG, data: *mut CK_BYTE, data_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("encrypted_len", encrypted_len);
    } then |a| { a.out_num("data_len", data_len); }
    ends |s| { finish_single(s.real.C_Decrypt, session, encrypted, encrypted_len); };
    C_DecryptUpdate(session: CK_SESSION_HANDLE, encrypted: *mut CK_BYTE, encrypted_len: CK_ULONG, part: *mut CK_BYTE, part_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("encrypted_len", encrypted_len);
    } then |a| { a.out_num("part_len", part_len); }
    ends |s| { finish_final(s.real.C_DecryptFinal, session); };
    C_DecryptFinal(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: *mut CK_ULONG) |a| {
        a.session(session);
    } then |a| { a.out_num("part_len", part_len); }
    ends |s| { finish_final(s.real.C_DecryptFinal, session); };
    C_DigestInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM) |a| {
        a.session(session);
        a.mechanism(mechanism);
    };
    C_Digest(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, digest: *mut CK_BYTE, digest_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("data_len", data_len);
    } then |a| { a.out_num("digest_len", digest_len); }
    ends |s| { finish_single(s.real.C_Digest, session, data, data_len); };
    C_DigestUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG) |a| {
        a.session(session);
        a.num("part_len", part_len);
    }
    ends |s| { finish_final(s.real.C_DigestFinal, session); };
    C_DigestKey(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.num("key", key);
    }
    ends |s| { finish_final(s.real.C_DigestFinal, session); };
    C_DigestFinal(session: CK_SESSION_HANDLE, digest: *mut CK_BYTE, digest_len: *mut CK_ULONG) |a| {
        a.session(session);
    } then |a| { a.out_num("digest_len", digest_len); }
    ends |s| { finish_final(s.real.C_DigestFinal, session); };
    C_SignInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("key", key);
    };
    C_Sign(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("data_len", data_len);
    } then |a| { a.out_num("signature_len", signature_len); }
    ends |s| { finish_single(s.real.C_Sign, session, data, data_len); };
    C_SignUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG) |a| {
        a.session(session);
        a.num("part_len", part_len);
    }
    ends |s| { finish_final(s.real.C_SignFinal, session); };
    C_SignFinal(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG) |a| {
        a.session(session);
    } then |a| { a.out_num("signature_len", signature_len); }
    ends |s| { finish_final(s.real.C_SignFinal, session); };
    C_SignRecoverInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("key", key);
    };
    C_SignRecover(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("data_len", data_len);
    } then |a| { a.out_num("signature_len", signature_len); }
    ends |s| { finish_single(s.real.C_SignRecover, session, data, data_len); };
    C_VerifyInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("key", key);
    };
    C_Verify(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: CK_ULONG) |a| {
        a.session(session);
        a.num("data_len", data_len);
        a.num("signature_len", signature_len);
    }
    ends |s| { if let Some(f) = s.real.C_Verify { f(session, data, data_len, signature, signature_len); } };
    C_VerifyUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG) |a| {
        a.session(session);
        a.num("part_len", part_len);
    }
    ends |s| { if let Some(f) = s.real.C_VerifyFinal { let mut sig = [0u8; 1]; f(session, sig.as_mut_ptr(), 1); } };
    C_VerifyFinal(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, signature_len: CK_ULONG) |a| {
        a.session(session);
        a.num("signature_len", signature_len);
    }
    ends |s| { if let Some(f) = s.real.C_VerifyFinal { f(session, signature, signature_len); } };
    C_VerifyRecoverInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("key", key);
    };
    C_VerifyRecover(session: CK_SESSION_HANDLE, signature: *mut CK_BYTE, signature_len: CK_ULONG, data: *mut CK_BYTE, data_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("signature_len", signature_len);
    } then |a| { a.out_num("data_len", data_len); }
    ends |s| { finish_single(s.real.C_VerifyRecover, session, signature, signature_len); };
    C_DigestEncryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, encrypted: *mut CK_BYTE, encrypted_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("part_len", part_len);
    } then |a| { a.out_num("encrypted_len", encrypted_len); };
    C_DecryptDigestUpdate(session: CK_SESSION_HANDLE, encrypted: *mut CK_BYTE, encrypted_len: CK_ULONG, part: *mut CK_BYTE, part_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("encrypted_len", encrypted_len);
    } then |a| { a.out_num("part_len", part_len); };
    C_SignEncryptUpdate(session: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG, encrypted: *mut CK_BYTE, encrypted_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("part_len", part_len);
    } then |a| { a.out_num("encrypted_len", encrypted_len); };
    C_DecryptVerifyUpdate(session: CK_SESSION_HANDLE, encrypted: *mut CK_BYTE, encrypted_len: CK_ULONG, part: *mut CK_BYTE, part_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.num("encrypted_len", encrypted_len);
    } then |a| { a.out_num("part_len", part_len); };
    C_GenerateKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.template("attributes", template, count);
    } then |a| { a.out_handle("key", key); };
    C_GenerateKeyPair(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, public_template: *mut CK_ATTRIBUTE, public_count: CK_ULONG, private_template: *mut CK_ATTRIBUTE, private_count: CK_ULONG, public_key: *mut CK_OBJECT_HANDLE, private_key: *mut CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.template("public_attributes", public_template, public_count);
        a.template("private_attributes", private_template, private_count);
    } then |a| {
        a.out_handle("public_key", public_key);
        a.out_handle("private_key", private_key);
    };
    C_WrapKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, wrapping_key: CK_OBJECT_HANDLE, key: CK_OBJECT_HANDLE, wrapped: *mut CK_BYTE, wrapped_len: *mut CK_ULONG) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("wrapping_key", wrapping_key);
        a.num("key", key);
    } then |a| { a.out_num("wrapped_len", wrapped_len); };
    C_UnwrapKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, unwrapping_key: CK_OBJECT_HANDLE, wrapped: *mut CK_BYTE, wrapped_len: CK_ULONG, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("unwrapping_key", unwrapping_key);
        a.num("wrapped_len", wrapped_len);
        a.template("attributes", template, count);
    } then |a| { a.out_handle("key", key); };
    C_DeriveKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, base_key: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE) |a| {
        a.session(session);
        a.mechanism(mechanism);
        a.num("base_key", base_key);
        a.template("attributes", template, count);
    } then |a| { a.out_handle("key", key); };
    C_SeedRandom(session: CK_SESSION_HANDLE, seed: *mut CK_BYTE, seed_len: CK_ULONG) |a| {
        a.session(session);
        a.num("seed_len", seed_len);
    };
    C_GenerateRandom(session: CK_SESSION_HANDLE, random: *mut CK_BYTE, random_len: CK_ULONG) |a| {
        a.session(session);
        a.num("random_len", random_len);
    };
    C_GetFunctionStatus(session: CK_SESSION_HANDLE) |a| { a.session(session); };
    C_CancelFunction(session: CK_SESSION_HANDLE) |a| { a.session(session); };
    C_WaitForSlotEvent(flags: CK_FLAGS, slot: *mut CK_SLOT_ID, reserved: *mut c_void) |a| {
        a.num("flags", flags);
    } then |a| { a.out_handle("slot", slot); };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_of_the_2_40_list_is_known_once() {
        assert_eq!(FUNCTIONS.len(), 68);
        let mut sorted = FUNCTIONS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), FUNCTIONS.len());
    }

    #[test]
    fn the_list_mirrors_the_real_one() {
        let real = CK_FUNCTION_LIST {
            version: cryptoki_sys::CK_VERSION {
                major: 2,
                minor: 40,
            },
            C_Sign: Some(forward::C_Sign),
            ..Default::default()
        };
        let list = forward::list(&real);
        assert_eq!((list.version.major, list.version.minor), (2, 40));
        assert!(list.C_Sign.is_some() && list.C_GetFunctionList.is_some());
        assert!(
            list.C_Verify.is_none(),
            "an entry the module leaves empty stays empty"
        );
    }
}
