//! The key map: which signer owns which key, and what is known about each signer.
//!
//! Kept in an embedded ACID database (redb) under the state directory. Every write is
//! a committed, durable transaction before the call returns, so a key is in the map
//! before `create_key` reports it: a `kill -9` at any moment can leave a backend key
//! the map does not know (an orphan, shown by `list --orphans`), never a reported key
//! without an owner.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Algorithm, KeyIdentifier, SignerError};

/// File name of the key map inside the state directory.
pub const KEYMAP_FILE: &str = "keymap.redb";

const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
const SIGNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("signers");
/// Configured signer name -> the signer id it was last bound to.
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");

/// Raw (key, value) rows read from a table.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Where a key lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The signer id (UUID) of the owning signer.
    pub signer_id: String,
    /// The backend's handle for the key, as its signer made it ([`crate::CreatedKey::handle`]:
    /// PKCS#11 the CKA_ID, software the file name, KMIP both Unique Identifiers).
    pub handle: String,
    pub alg: Algorithm,
}

/// What is known about one signer id: its identity key and its last seen name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRecord {
    pub signer_id: String,
    /// The configured name it was last bound under.
    pub last_name: String,
    /// "OpenSSL", "PKCS#11" or "KMIP".
    pub signer_type: String,
    /// The identity key: its identifier in the backend, algorithm and public key (SPKI DER).
    pub identity_key: KeyIdentifier,
    pub identity_alg: Algorithm,
    #[serde(with = "hex_bytes")]
    pub identity_public_key: Vec<u8>,
    /// The identity key's backend handle ([`crate::CreatedKey::handle`]); absent in key
    /// maps written before handles were recorded (the signer then searches for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_handle: Option<String>,
    /// Facts about the backend from the last bind (library, token, server).
    pub info: Vec<(String, String)>,
    /// Key types the backend refused to create, with its words, as last learned
    /// ([`crate::Signer::unavailable`]); kept so that `status` in a later process can
    /// still say why a key type is missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<(crate::KeyType, String)>,
}

/// The key map of one state directory.
pub struct KeyMap {
    db: Database,
    path: PathBuf,
}

fn storage(path: &Path, e: impl std::fmt::Display) -> SignerError {
    SignerError::new(
        crate::ErrorKind::Io,
        format!("key map {}: {e}", path.display()),
    )
}

impl KeyMap {
    /// Opens (or creates) the key map in `state_dir`.
    ///
    /// Creation is exclusive: processes starting together on a fresh state directory
    /// all end up with the same map file, and none replaces a map another has written.
    ///
    /// Refused: a key map another process has open (redb locks the file), with an
    /// error that says so.
    pub fn open(state_dir: &Path) -> Result<Self, SignerError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| SignerError::io(format!("creating {}", state_dir.display()), e))?;
        let path = state_dir.join(KEYMAP_FILE);
        if !path.exists() {
            create_exclusively(state_dir, &path)?;
        }
        let db = Database::create(&path).map_err(|e| storage(&path, e))?;
        let map = KeyMap { db, path };
        // Create the tables up front so that readers never meet a missing table.
        map.write(|txn| {
            txn.open_table(KEYS)?;
            txn.open_table(SIGNERS)?;
            txn.open_table(NAMES)?;
            Ok(())
        })?;
        Ok(map)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), SignerError> {
        let txn = self.db.begin_write().map_err(|e| storage(&self.path, e))?;
        f(&txn).map_err(|e| storage(&self.path, e))?;
        txn.commit().map_err(|e| storage(&self.path, e))
    }

    /// Records `key` as owned by `record.signer_id`; durable when this returns.
    pub fn insert_key(&self, key: &KeyIdentifier, record: &KeyRecord) -> Result<(), SignerError> {
        let value = serde_json::to_vec(record).map_err(|e| storage(&self.path, e))?;
        self.write(|txn| {
            txn.open_table(KEYS)?
                .insert(key.as_bytes().as_slice(), value.as_slice())?;
            Ok(())
        })
    }

    pub fn remove_key(&self, key: &KeyIdentifier) -> Result<(), SignerError> {
        self.write(|txn| {
            txn.open_table(KEYS)?.remove(key.as_bytes().as_slice())?;
            Ok(())
        })
    }

    pub fn key(&self, key: &KeyIdentifier) -> Result<Option<KeyRecord>, SignerError> {
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(KEYS)?;
            Ok(table
                .get(key.as_bytes().as_slice())?
                .map(|v| v.value().to_vec()))
        };
        match read().map_err(|e| storage(&self.path, e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| storage(&self.path, format!("record of {key}: {e}"))),
        }
    }

    /// Every mapped key, in identifier order.
    pub fn keys(&self) -> Result<Vec<(KeyIdentifier, KeyRecord)>, SignerError> {
        let read = || -> Result<Rows, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(KEYS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        };
        read()
            .map_err(|e| storage(&self.path, e))?
            .into_iter()
            .map(|(k, v)| {
                let id: [u8; 20] = k
                    .try_into()
                    .map_err(|_| storage(&self.path, "a key entry is not 20 bytes"))?;
                let record = serde_json::from_slice(&v).map_err(|e| storage(&self.path, e))?;
                Ok((KeyIdentifier::from_bytes(id), record))
            })
            .collect()
    }

    pub fn put_signer(&self, record: &SignerRecord) -> Result<(), SignerError> {
        let value = serde_json::to_vec(record).map_err(|e| storage(&self.path, e))?;
        self.write(|txn| {
            txn.open_table(SIGNERS)?
                .insert(record.signer_id.as_str(), value.as_slice())?;
            Ok(())
        })
    }

    pub fn signers(&self) -> Result<Vec<SignerRecord>, SignerError> {
        let read = || -> Result<Vec<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SIGNERS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                out.push(entry?.1.value().to_vec());
            }
            Ok(out)
        };
        read()
            .map_err(|e| storage(&self.path, e))?
            .into_iter()
            .map(|v| serde_json::from_slice(&v).map_err(|e| storage(&self.path, e)))
            .collect()
    }

    pub fn signer(&self, signer_id: &str) -> Result<Option<SignerRecord>, SignerError> {
        Ok(self
            .signers()?
            .into_iter()
            .find(|s| s.signer_id == signer_id))
    }

    /// Records that configured signer `name` is bound to `signer_id`.
    pub fn set_name(&self, name: &str, signer_id: &str) -> Result<(), SignerError> {
        self.write(|txn| {
            txn.open_table(NAMES)?.insert(name, signer_id)?;
            Ok(())
        })
    }

    /// The signer id `name` was last bound to.
    pub fn bound_name(&self, name: &str) -> Result<Option<String>, SignerError> {
        let read = || -> Result<Option<String>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(NAMES)?;
            Ok(table.get(name)?.map(|v| v.value().to_string()))
        };
        read().map_err(|e| storage(&self.path, e))
    }
}

/// Makes a new, empty key map under a unique temporary name and links it to `path`
/// only if nothing is there yet (`link(2)` never replaces), so that:
///
/// - a kill while it is being made never leaves a half-made file at `path` (redb
///   writes its magic number last and refuses a file without it);
/// - of several processes starting on a fresh state directory, exactly one map wins
///   and none replaces a map another has already written keys to (a rename would).
///
/// A temporary file left by a kill is harmless: it is never opened again.
fn create_exclusively(state_dir: &Path, path: &Path) -> Result<(), SignerError> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{KEYMAP_FILE}."))
        .suffix(".new")
        .tempfile_in(state_dir)
        .map_err(|e| {
            SignerError::io(format!("creating a key map in {}", state_dir.display()), e)
        })?;
    {
        let db = Database::create(tmp.path()).map_err(|e| storage(tmp.path(), e))?;
        let txn = db.begin_write().map_err(|e| storage(tmp.path(), e))?;
        let made = (|| -> Result<(), redb::Error> {
            txn.open_table(KEYS)?;
            txn.open_table(SIGNERS)?;
            txn.open_table(NAMES)?;
            Ok(())
        })();
        made.map_err(|e| storage(tmp.path(), e))?;
        txn.commit().map_err(|e| storage(tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| SignerError::io(format!("syncing {}", tmp.path().display()), e))?;
    match std::fs::hard_link(tmp.path(), path) {
        Ok(()) => {}
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(SignerError::io(
                format!("linking {} into place", tmp.path().display()),
                e,
            ))
        }
    }
    drop(tmp);
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SignerError::io(format!("syncing {}", state_dir.display()), e))
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid(b: u8) -> KeyIdentifier {
        KeyIdentifier::from_bytes([b; 20])
    }

    #[test]
    fn keys_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let rec = KeyRecord {
            signer_id: "s1".into(),
            handle: kid(1).to_string(),
            alg: Algorithm::Rsa2048Pkcs1Sha256,
        };
        {
            let m = KeyMap::open(dir.path()).unwrap();
            m.insert_key(&kid(1), &rec).unwrap();
            m.set_name("hsm", "s1").unwrap();
        }
        let m = KeyMap::open(dir.path()).unwrap();
        assert_eq!(m.key(&kid(1)).unwrap(), Some(rec));
        assert_eq!(m.key(&kid(2)).unwrap(), None);
        assert_eq!(m.bound_name("hsm").unwrap().as_deref(), Some("s1"));
        assert_eq!(m.keys().unwrap().len(), 1);
        m.remove_key(&kid(1)).unwrap();
        assert!(m.keys().unwrap().is_empty());
    }

    #[test]
    fn signer_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = KeyMap::open(dir.path()).unwrap();
        let rec = SignerRecord {
            signer_id: "id".into(),
            last_name: "hsm".into(),
            signer_type: "PKCS#11".into(),
            identity_key: kid(9),
            identity_alg: Algorithm::EcdsaP256Sha256,
            identity_public_key: vec![1, 2, 3],
            identity_handle: None,
            unavailable: vec![],
            info: vec![("token".into(), "t".into())],
        };
        m.put_signer(&rec).unwrap();
        assert_eq!(m.signer("id").unwrap(), Some(rec));
        assert_eq!(m.signer("other").unwrap(), None);
    }
}
