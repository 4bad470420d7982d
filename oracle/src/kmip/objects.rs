//! A KMIP server's objects one by one, as a client that does not own the server sees
//! them: every object Locate finds ([`Session::locate_all`]), what identifies each
//! ([`Session::object_facts`]: its type, names, state, algorithm and length, and for a
//! public key the key identifier computed from the key), and the requests that remove
//! one ([`Session::revoke`], [`Session::destroy`]), whose answers the caller judges.

use std::fmt;

use super::message::{self, object_type, operation, tag, Answer};
use super::ttlv::Item;
use super::{object_type_name, KmipError, Session};
use crate::keyid::KeyId;

/// The attributes asked for each object, by their KMIP 1.2 names.
const ASKED: [&str; 5] = [
    "Object Type",
    "Name",
    "State",
    "Cryptographic Algorithm",
    "Cryptographic Length",
];

/// Revocation Reason Code Cessation of Operation (KMIP 1.2, 9.1.3.2.19).
const CESSATION_OF_OPERATION: u32 = 0x06;

/// The State values of an object whose key material is gone (Destroyed, Destroyed
/// Compromised): a server may keep listing such objects.
const DESTROYED_STATES: [u32; 2] = [0x05, 0x06];

/// What identifies one object: the attributes that do not change while nobody touches
/// it. Attributes the server does not give are `None` (or no names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFacts {
    pub object_type: Option<u32>,
    /// Its Name values (Name Value), in the server's order.
    pub names: Vec<String>,
    pub state: Option<u32>,
    /// Cryptographic Algorithm.
    pub algorithm: Option<u32>,
    /// Cryptographic Length, in bits.
    pub length: Option<i32>,
    /// For a public key: its key identifier, computed from the key a Get returns, or
    /// why that could not be done.
    pub key: Option<Result<KeyId, String>>,
    /// Why the server gave no attributes (its answer to Get Attributes), if it did not.
    pub unread: Option<String>,
}

impl ObjectFacts {
    /// Whether the state says the key material is destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.state.is_some_and(|s| DESTROYED_STATES.contains(&s))
    }
}

/// The name of a KMIP 1.2 State value, if it is one.
pub fn state_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 6] = [
        "Pre-Active",
        "Active",
        "Deactivated",
        "Compromised",
        "Destroyed",
        "Destroyed Compromised",
    ];
    NAMES
        .get(usize::try_from(code).ok()?.checked_sub(1)?)
        .copied()
}

/// The name of a Cryptographic Algorithm value for the algorithms of signing keys.
fn algorithm_name(code: u32) -> Option<&'static str> {
    match code {
        0x03 => Some("AES"),
        0x04 => Some("RSA"),
        0x05 => Some("DSA"),
        0x06 => Some("ECDSA"),
        0x1A => Some("EC"),
        _ => None,
    }
}

/// "Private Key 'k_priv' (RSA 2048, Active)".
impl fmt::Display for ObjectFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_or_code = |name: Option<&str>, code: u32| match name {
            Some(n) => n.to_string(),
            None => format!("{code:#x}"),
        };
        match self.object_type {
            Some(t) => f.write_str(&name_or_code(object_type_name(t), t))?,
            None => f.write_str("object of unknown type")?,
        }
        for n in &self.names {
            write!(f, " '{n}'")?;
        }
        let mut details = Vec::new();
        match (self.algorithm, self.length) {
            (Some(a), Some(l)) => {
                details.push(format!("{} {l}", name_or_code(algorithm_name(a), a)))
            }
            (Some(a), None) => details.push(name_or_code(algorithm_name(a), a)),
            (None, Some(l)) => details.push(format!("{l} bits")),
            (None, None) => {}
        }
        if let Some(s) = self.state {
            details.push(name_or_code(state_name(s), s));
        }
        match &self.key {
            Some(Ok(id)) => details.push(format!("key {id}")),
            Some(Err(why)) => details.push(format!("key unreadable: {why}")),
            None => {}
        }
        if let Some(why) = &self.unread {
            details.push(format!("attributes unreadable: {why}"));
        }
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        Ok(())
    }
}

impl Session<'_> {
    /// The Unique Identifiers of every object Locate without attributes finds: all the
    /// server lets this client see. Refused as [`Session::locate`] is.
    pub fn locate_all(&mut self) -> Result<Vec<String>, KmipError> {
        self.locate(vec![])
    }

    /// The facts of object `uid`; `None` when the server says there is no such object.
    /// Attributes the server refuses to give are recorded as such (`unread`), not an
    /// error; a lost connection is.
    pub fn object_facts(&mut self, uid: &str) -> Result<Option<ObjectFacts>, KmipError> {
        let mut payload = vec![message::unique_identifier(uid)];
        payload.extend(ASKED.iter().map(|n| message::attribute_name(n)));
        let answer = self.call(operation::GET_ATTRIBUTES, payload)?;
        if answer.is_not_found() {
            return Ok(None);
        }
        let mut facts = ObjectFacts {
            object_type: None,
            names: Vec::new(),
            state: None,
            algorithm: None,
            length: None,
            key: None,
            unread: None,
        };
        if answer.status != 0 {
            facts.unread = Some(answer.describe());
            return Ok(Some(facts));
        }
        if let Some(p) = &answer.payload {
            for (name, value) in message::attributes(p) {
                match name {
                    "Object Type" => facts.object_type = value.as_enum(),
                    "Name" => facts.names.extend(
                        value
                            .child(tag::NAME_VALUE)
                            .and_then(Item::as_text)
                            .map(str::to_string),
                    ),
                    "State" => facts.state = value.as_enum(),
                    "Cryptographic Algorithm" => facts.algorithm = value.as_enum(),
                    "Cryptographic Length" => facts.length = value.as_int(),
                    _ => {}
                }
            }
        }
        if facts.object_type == Some(object_type::PUBLIC_KEY) && !facts.is_destroyed() {
            facts.key = Some(match self.get_public_key(uid) {
                Ok(Some(spki)) => KeyId::of_spki(&spki).map_err(|e| e.0),
                Ok(None) => Err("the server refused the Get".to_string()),
                Err(e @ KmipError::Connection(_)) => return Err(e),
                Err(e) => Err(e.to_string()),
            });
        }
        Ok(Some(facts))
    }

    /// Revoke `uid` with reason Cessation of Operation (an active object becomes
    /// Deactivated); the server's answer, whatever it is.
    pub fn revoke(&mut self, uid: &str) -> Result<Answer, KmipError> {
        self.call(
            operation::REVOKE,
            vec![
                message::unique_identifier(uid),
                message::revocation_reason(CESSATION_OF_OPERATION),
            ],
        )
    }

    /// Destroy `uid`; the server's answer, whatever it is.
    pub fn destroy(&mut self, uid: &str) -> Result<Answer, KmipError> {
        self.call(operation::DESTROY, vec![message::unique_identifier(uid)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ObjectFacts {
        ObjectFacts {
            object_type: Some(object_type::PRIVATE_KEY),
            names: vec!["k_priv".into()],
            state: Some(2),
            algorithm: Some(4),
            length: Some(2048),
            key: None,
            unread: None,
        }
    }

    #[test]
    fn facts_read_as_a_line() {
        assert_eq!(
            facts().to_string(),
            "Private Key 'k_priv' (RSA 2048, Active)"
        );
        let odd = ObjectFacts {
            object_type: None,
            names: vec![],
            state: Some(9),
            algorithm: Some(0x99),
            length: None,
            key: Some(Err("no".into())),
            unread: None,
        };
        assert_eq!(
            odd.to_string(),
            "object of unknown type (0x99, 0x9, key unreadable: no)"
        );
    }

    #[rstest::rstest]
    #[case(Some(2), false)]
    #[case(Some(3), false)]
    #[case(Some(5), true)]
    #[case(Some(6), true)]
    #[case(None, false)]
    fn destroyed_is_read_from_the_state(#[case] state: Option<u32>, #[case] destroyed: bool) {
        let f = ObjectFacts { state, ..facts() };
        assert_eq!(f.is_destroyed(), destroyed);
    }

    #[test]
    fn state_names_are_kmip_1_2_s() {
        assert_eq!(state_name(1), Some("Pre-Active"));
        assert_eq!(state_name(6), Some("Destroyed Compromised"));
        assert_eq!(state_name(0), None);
        assert_eq!(state_name(7), None);
    }
}
