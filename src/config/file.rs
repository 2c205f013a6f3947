//! The TOML file layer: read once, checked for keys that no section reads, then
//! handed to each section, which deserializes only its own keys from it.
//!
//! serde's `deny_unknown_fields` cannot do the check here, because no single
//! struct holds every key (and it does not work with `flatten`). So each section's
//! file struct is the one list of its keys (`keys_of` asks serde for it), and the
//! check refuses any other key the way `deny_unknown_fields` did: with the line,
//! the key, and the keys that would have been understood. A typo can then never
//! silently leave a setting at its default.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, Visitor};

/// The config file's path and text.
pub(super) struct ConfigFile {
    pub(super) path: PathBuf,
    text: String,
}

impl ConfigFile {
    /// Reads the file and refuses it if it is not TOML or holds a key not in `known`.
    pub(super) fn open(path: &Path, known: &'static [&'static str]) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let file = ConfigFile {
            path: path.to_owned(),
            text,
        };
        file.refuse(
            toml::Deserializer::parse(&file.text).and_then(|d| KnownKeys(known).deserialize(d)),
        )?;
        Ok(file)
    }

    /// A section's keys, typed by its file struct (which ignores the other sections' keys).
    pub(super) fn section<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        self.refuse(toml::from_str(&self.text))
    }

    fn refuse<T>(&self, parsed: Result<T, toml::de::Error>) -> anyhow::Result<T> {
        match parsed {
            Ok(value) => Ok(value),
            Err(e) => bail!("invalid config file {}: {e}", self.path.display()),
        }
    }
}

/// The keys a file struct reads, taken from serde's derive so that the struct is
/// the only list of them. The struct must be a plain one (no `flatten`).
pub(super) fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut keys));
    keys
}

/// A deserializer that only records the field list a derived struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

/// The only error `FieldNames` gives: it never produces a value.
#[derive(Debug)]
struct NoValue;

impl fmt::Display for NoValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names only")
    }
}

impl std::error::Error for NoValue {}

impl de::Error for NoValue {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NoValue
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = NoValue;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NoValue> {
        Err(NoValue)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, NoValue> {
        *self.0 = fields;
        Err(NoValue)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// Walks the file's top-level keys, refusing any not in the list (values unread).
struct KnownKeys(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_struct("FileConfig", self.0, self)
    }
}

impl<'de> Visitor<'de> for KnownKeys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of settings")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KnownKey(self.0))?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// One key, checked against the list.
struct KnownKey(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KnownKey {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a setting's name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        if self.0.contains(&key) {
            Ok(())
        } else {
            Err(E::unknown_field(key, self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Two {
        quality: Option<i64>,
        width: Option<u32>,
    }

    #[test]
    fn a_file_struct_lists_its_own_keys() {
        assert_eq!(keys_of::<Two>(), ["quality", "width"]);
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line_and_the_known_keys() {
        let dir = std::env::temp_dir().join(format!("kc-file-layer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.toml");
        std::fs::write(&path, "quality = 80\n\nqualty = 5\n").unwrap();
        let err = ConfigFile::open(&path, keys_of::<Two>())
            .err()
            .expect("an unknown key is refused")
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains(&format!("invalid config file {}", path.display())),
            "{err}"
        );
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("unknown field `qualty`, expected `quality` or `width`"),
            "{err}"
        );
    }
}
