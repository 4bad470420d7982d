//! The shim's configuration: a TOML file named by [`CONFIG_VAR`], read when the shim's
//! `C_GetFunctionList` is first called, and again whenever the file changes (rules and
//! hidden mechanisms only; see `Shim::refresh`).
//!
//! [`Config`] is the file as written (names are strings, so that the harness can write
//! one with serde); [`Plan`] is the same, checked, with names resolved to numbers.
//! Everything is checked before the real module is loaded: an unknown key, function,
//! `CKR_*` or `CKM_*` name, or a field that does not fit its action, is an error.

use std::path::PathBuf;

use cryptoki_sys::{CKR_FUNCTION_NOT_SUPPORTED, CKR_OK, CK_MECHANISM_TYPE, CK_RV, CK_ULONG};
use serde::{Deserialize, Serialize};

use crate::names;

/// The environment variable that names the configuration file.
pub const CONFIG_VAR: &str = "HSM_HARNESS_SHIM_CONFIG";

/// The configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The real PKCS#11 module every call is forwarded to.
    pub module: PathBuf,
    /// Where the JSON-lines trace is appended; no trace without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// Mechanisms (`CKM_*` names or numbers) removed from C_GetMechanismList; for them
    /// C_GetMechanismInfo and every function that takes a mechanism answer
    /// CKR_MECHANISM_INVALID without reaching the module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hide_mechanisms: Vec<String>,
    /// Fault injection, `[[rule]]` in the file.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// A number that, when a running shim sees it change, makes the shim finalise and
    /// initialise the real module again (untraced), as a restarted process would: for
    /// modules that give each loader its own connection (p11-kit's client), whose view
    /// of tokens is fixed when it connects. Never for a module the process also uses
    /// directly: finalising it would pull it from under the other user.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reconnect: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One `[[rule]]`: what to do to which calls of one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The PKCS#11 function, e.g. `C_Sign`.
    pub function: String,
    pub action: Action,
    /// For `return`: the `CKR_*` name (or a number, e.g. `"0x80000001"`) to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rv: Option<String>,
    /// For `delay`: milliseconds to wait before the call goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
    /// Only the Nth call (from 1) of the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_call: Option<u64>,
    /// The Nth call (from 1) and every later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_call: Option<u64>,
}

impl Rule {
    /// A rule on every call of `function`.
    pub fn new(function: &str, action: Action) -> Self {
        Rule {
            function: function.to_string(),
            action,
            rv: None,
            millis: None,
            on_call: None,
            from_call: None,
        }
    }
}

/// What a rule does to the calls it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Answer CKR_FUNCTION_NOT_SUPPORTED; the module is not called.
    Unsupported,
    /// Answer `rv`; the module is not called.
    Return,
    /// Wait `millis`, then go on (to the module, or to another rule's answer).
    Delay,
    /// `abort()` the process inside the call.
    Abort,
    /// Answer CKR_OK without calling the module: a module that says it did what it
    /// did not (a destroy that destroys nothing, a generator that generates nothing).
    /// Only for functions whose success sets nothing the caller did not provide
    /// ([`PRETEND_FUNCTIONS`]), so no caller reads values that were never set.
    Pretend,
}

/// The functions `pretend` applies to: their success returns nothing but CKR_OK, or
/// (C_GenerateRandom) fills a buffer the caller allocated, which then keeps what the
/// caller put in it.
pub const PRETEND_FUNCTIONS: &[&str] =
    &["C_DestroyObject", "C_SetAttributeValue", "C_GenerateRandom"];

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub module: PathBuf,
    pub trace: Option<PathBuf>,
    pub hidden: Vec<CK_MECHANISM_TYPE>,
    pub rules: Vec<PlannedRule>,
    pub reconnect: u64,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRule {
    /// Index in [`crate::FUNCTIONS`].
    pub function: usize,
    pub effect: Effect,
    pub calls: Calls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Return(CK_RV),
    Delay(u64),
    Abort,
    Pretend,
}

/// Which calls of the function a rule applies to (numbered from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    Every,
    Only(u64),
    From(u64),
}

impl Calls {
    pub fn matches(self, n: u64) -> bool {
        match self {
            Calls::Every => true,
            Calls::Only(k) => n == k,
            Calls::From(k) => n >= k,
        }
    }
}

/// What the rules say about the `n`th call of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Total of the matching delays, in milliseconds.
    pub delay_ms: u64,
    /// The first matching answer (`unsupported`, `return` or `abort`), in file order.
    pub answer: Option<(Action, Effect)>,
}

impl Config {
    /// Parses the TOML text of a configuration file.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a shim configuration always serialises")
    }

    /// Checks the configuration and resolves names.
    pub fn plan(&self) -> Result<Plan, String> {
        if self.module.as_os_str().is_empty() {
            return Err("`module` is empty".into());
        }
        let hidden = self
            .hide_mechanisms
            .iter()
            .map(|m| parse_mechanism(m).map_err(|e| format!("hide_mechanisms: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.plan()
                    .map_err(|e| format!("rule {} ({}): {e}", i + 1, r.function))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            module: self.module.clone(),
            trace: self.trace.clone(),
            hidden,
            rules,
            reconnect: self.reconnect,
        })
    }
}

impl Rule {
    fn plan(&self) -> Result<PlannedRule, String> {
        let function = crate::FUNCTIONS
            .iter()
            .position(|f| *f == self.function)
            .ok_or_else(|| {
                format!(
                    "unknown function `{}` (PKCS#11 2.40 names, e.g. C_Sign)",
                    self.function
                )
            })?;
        let calls = match (self.on_call, self.from_call) {
            (None, None) => Calls::Every,
            (Some(0), _) | (_, Some(0)) => return Err("calls are numbered from 1".into()),
            (Some(n), None) => Calls::Only(n),
            (None, Some(n)) => Calls::From(n),
            (Some(_), Some(_)) => return Err("give `on_call` or `from_call`, not both".into()),
        };
        let not_here = |field: &str| {
            Err(format!(
                "`{field}` does not apply to action `{}`",
                self.action.name()
            ))
        };
        if self.rv.is_some() && self.action != Action::Return {
            return not_here("rv");
        }
        if self.millis.is_some() && self.action != Action::Delay {
            return not_here("millis");
        }
        let effect = match self.action {
            Action::Unsupported => Effect::Return(CKR_FUNCTION_NOT_SUPPORTED),
            Action::Return => {
                let rv = self.rv.as_deref().ok_or("action `return` needs `rv`")?;
                let rv = parse_rv(rv)?;
                if rv == CKR_OK {
                    return Err(
                        "`rv = \"CKR_OK\"` would leave the outputs unset; leave the call alone instead"
                            .into(),
                    );
                }
                Effect::Return(rv)
            }
            Action::Delay => Effect::Delay(self.millis.ok_or("action `delay` needs `millis`")?),
            Action::Abort => Effect::Abort,
            Action::Pretend if PRETEND_FUNCTIONS.contains(&self.function.as_str()) => {
                Effect::Pretend
            }
            Action::Pretend => {
                return Err(format!(
                    "action `pretend` applies only to functions without outputs of their own ({}), not `{}`",
                    PRETEND_FUNCTIONS.join(", "),
                    self.function
                ))
            }
        };
        Ok(PlannedRule {
            function,
            effect,
            calls,
        })
    }
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Unsupported => "unsupported",
            Action::Return => "return",
            Action::Delay => "delay",
            Action::Abort => "abort",
            Action::Pretend => "pretend",
        }
    }

    fn of(effect: Effect) -> Action {
        match effect {
            Effect::Return(CKR_FUNCTION_NOT_SUPPORTED) => Action::Unsupported,
            Effect::Return(_) => Action::Return,
            Effect::Delay(_) => Action::Delay,
            Effect::Abort => Action::Abort,
            Effect::Pretend => Action::Pretend,
        }
    }
}

impl Plan {
    /// What to do to call number `n` (from 1) of function `function`.
    pub fn decide(&self, function: usize, n: u64) -> Decision {
        let mut d = Decision::default();
        for r in self
            .rules
            .iter()
            .filter(|r| r.function == function && r.calls.matches(n))
        {
            match r.effect {
                Effect::Delay(ms) => d.delay_ms = d.delay_ms.saturating_add(ms),
                other if d.answer.is_none() => d.answer = Some((Action::of(other), other)),
                _ => {}
            }
        }
        d
    }

    pub fn is_hidden(&self, mechanism: CK_MECHANISM_TYPE) -> bool {
        self.hidden.contains(&mechanism)
    }
}

/// A number written in decimal or as `0x` hex.
fn parse_number(s: &str) -> Option<CK_ULONG> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => CK_ULONG::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `CKR_DEVICE_ERROR` or a number.
pub fn parse_rv(s: &str) -> Result<CK_RV, String> {
    names::RV
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .or_else(|| parse_number(s))
        .ok_or_else(|| format!("unknown return value `{s}` (a CKR_* name or a number)"))
}

/// `CKM_ECDSA` or a number.
pub fn parse_mechanism(s: &str) -> Result<CK_MECHANISM_TYPE, String> {
    names::MECHANISMS
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .or_else(|| parse_number(s))
        .ok_or_else(|| format!("unknown mechanism `{s}` (a CKM_* name or a number)"))
}

/// The name of a return value: `CKR_OK`, or hex for one without a name.
pub fn rv_name(rv: CK_RV) -> String {
    lookup(names::RV, rv)
}

/// The name of a mechanism type: `CKM_ECDSA`, or hex for one without a name.
pub fn mechanism_name(m: CK_MECHANISM_TYPE) -> String {
    lookup(names::MECHANISMS, m)
}

/// The name of a user type: `CKU_USER`, or hex.
pub fn user_type_name(u: CK_ULONG) -> String {
    lookup(names::USER_TYPES, u)
}

fn lookup(table: &[(&str, CK_ULONG)], v: CK_ULONG) -> String {
    table
        .iter()
        .find(|(_, x)| *x == v)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| format!("{v:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses_and_plans() {
        let text = r#"
            module = "/usr/lib/softhsm/libsofthsm2.so"
            trace = "/tmp/t.jsonl"
            hide_mechanisms = ["CKM_ECDSA", "0x1041"]
            [[rule]]
            function = "C_GenerateRandom"
            action = "unsupported"
            [[rule]]
            function = "C_Sign"
            action = "return"
            rv = "CKR_DEVICE_ERROR"
            from_call = 2
            [[rule]]
            function = "C_Sign"
            action = "delay"
            millis = 5
            on_call = 3
        "#;
        let c = Config::from_toml(text).unwrap();
        let p = c.plan().unwrap();
        assert_eq!(p.hidden, vec![cryptoki_sys::CKM_ECDSA, 0x1041]);
        let sign = crate::FUNCTIONS
            .iter()
            .position(|f| *f == "C_Sign")
            .unwrap();
        assert_eq!(p.decide(sign, 1), Decision::default());
        let d2 = p.decide(sign, 2);
        assert_eq!(d2.delay_ms, 0);
        assert_eq!(
            d2.answer,
            Some((
                Action::Return,
                Effect::Return(cryptoki_sys::CKR_DEVICE_ERROR)
            ))
        );
        assert_eq!(p.decide(sign, 3).delay_ms, 5);
        // Round trip through the serialiser the harness uses.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn pretend_is_for_functions_without_outputs_only() {
        let plan = |function: &str| {
            Config::from_toml(&format!(
                "module = \"/m.so\"\n[[rule]]\nfunction = \"{function}\"\naction = \"pretend\"\n"
            ))
            .and_then(|c| c.plan())
        };
        let p = plan("C_DestroyObject").unwrap();
        let destroy = crate::FUNCTIONS
            .iter()
            .position(|f| *f == "C_DestroyObject")
            .unwrap();
        assert_eq!(
            p.decide(destroy, 1).answer,
            Some((Action::Pretend, Effect::Pretend))
        );
        assert!(plan("C_GenerateRandom").is_ok());
        for function in ["C_Sign", "C_GetAttributeValue", "C_GenerateKeyPair"] {
            assert!(plan(function)
                .unwrap_err()
                .contains("applies only to functions without outputs"));
        }
    }

    #[test]
    fn mistakes_are_refused_with_the_reason() {
        let m = "module = \"/m.so\"\n";
        let err = |extra: &str| Config::from_toml(&format!("{m}{extra}")).and_then(|c| c.plan());
        assert!(err("colour = 1\n").unwrap_err().contains("unknown field"));
        assert!(err("[[rule]]\nfunction = \"C_Sing\"\naction = \"abort\"\n")
            .unwrap_err()
            .contains("unknown function `C_Sing`"));
        assert!(err("[[rule]]\nfunction = \"C_Sign\"\naction = \"explode\"\n").is_err());
        assert!(
            err("[[rule]]\nfunction = \"C_Sign\"\naction = \"return\"\n")
                .unwrap_err()
                .contains("needs `rv`")
        );
        assert!(
            err("[[rule]]\nfunction = \"C_Sign\"\naction = \"return\"\nrv = \"CKR_NOPE\"\n")
                .unwrap_err()
                .contains("unknown return value")
        );
        assert!(err(
            "[[rule]]\nfunction = \"C_Sign\"\naction = \"delay\"\nmillis = 1\nrv = \"CKR_OK\"\n"
        )
        .unwrap_err()
        .contains("does not apply"));
        assert!(err(
            "[[rule]]\nfunction = \"C_Sign\"\naction = \"abort\"\non_call = 1\nfrom_call = 2\n"
        )
        .unwrap_err()
        .contains("not both"));
        assert!(err("hide_mechanisms = [\"CKM_NOTHING\"]\n")
            .unwrap_err()
            .contains("unknown mechanism"));
    }

    #[test]
    fn names_both_ways() {
        assert_eq!(rv_name(0), "CKR_OK");
        assert_eq!(rv_name(0x8000_0001), "0x80000001");
        assert_eq!(
            mechanism_name(cryptoki_sys::CKM_EC_KEY_PAIR_GEN),
            "CKM_EC_KEY_PAIR_GEN"
        );
        assert_eq!(user_type_name(1), "CKU_USER");
        assert_eq!(parse_rv("0x30").unwrap(), cryptoki_sys::CKR_DEVICE_ERROR);
    }
}
