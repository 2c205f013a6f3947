//! Which mask each stream has: the config file's, unless the admin API stored one
//! for it. A mask set over the API wins over the file's, an empty one too (the
//! director removed the file's masks on purpose), and it is kept by stream name,
//! so a stream created later (a browser-camera room, or one forgotten while idle
//! and fed again) starts with its masks from its first frame.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Mask;

#[derive(Debug, Default)]
pub struct MaskBook {
    file: BTreeMap<String, Arc<Mask>>,
    stored: BTreeMap<String, Arc<Mask>>,
    /// The stored masks could not be read at start: a stream the API has not set
    /// since is masked whole, since what it stored may be more than the file's.
    stored_unknown: bool,
}

impl MaskBook {
    /// The file's masks and those the API stored, by stream name.
    pub fn new(file: BTreeMap<String, Mask>, stored: BTreeMap<String, Mask>) -> MaskBook {
        let shared = |m: BTreeMap<String, Mask>| {
            m.into_iter()
                .map(|(name, mask)| (name, Arc::new(mask)))
                .collect()
        };
        MaskBook {
            file: shared(file),
            stored: shared(stored),
            stored_unknown: false,
        }
    }

    /// For when the stored masks cannot be read: fails closed, masking every
    /// stream whole until the API sets its masks again.
    pub fn stored_unreadable(file: BTreeMap<String, Mask>) -> MaskBook {
        MaskBook {
            stored_unknown: true,
            ..MaskBook::new(file, BTreeMap::new())
        }
    }

    /// The mask stream `name` has now: the stored one, else the file's, else none.
    pub fn effective(&self, name: &str) -> Arc<Mask> {
        if let Some(stored) = self.stored.get(name) {
            return stored.clone();
        }
        if self.stored_unknown {
            return Arc::new(Mask::full());
        }
        self.file.get(name).cloned().unwrap_or_default()
    }

    /// Records the mask the API stored for `name` (empty removes the masks) and
    /// returns it as the stream's effective mask.
    pub fn store(&mut self, name: &str, mask: Mask) -> Arc<Mask> {
        let mask = Arc::new(mask);
        self.stored.insert(name.to_owned(), mask.clone());
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::Rect;

    fn mask(x: f64) -> Mask {
        Mask::new(vec![Rect {
            x,
            y: 0.0,
            w: 0.1,
            h: 0.1,
        }])
        .unwrap()
    }

    #[test]
    fn the_api_wins_over_the_file_even_when_it_removed_the_masks() {
        let file = BTreeMap::from([
            ("camera".to_owned(), mask(0.1)),
            ("hall".to_owned(), mask(0.2)),
            ("yard".to_owned(), mask(0.3)),
        ]);
        let stored = BTreeMap::from([
            ("hall".to_owned(), mask(0.5)),
            ("yard".to_owned(), Mask::none()),
            ("aula-2".to_owned(), mask(0.6)),
        ]);
        let mut book = MaskBook::new(file, stored);
        assert_eq!(*book.effective("camera"), mask(0.1), "only the file's");
        assert_eq!(*book.effective("hall"), mask(0.5), "the API's wins");
        assert!(book.effective("yard").is_empty(), "an API [] wins too");
        assert_eq!(
            *book.effective("aula-2"),
            mask(0.6),
            "a room without a camera"
        );
        assert!(book.effective("other").is_empty());
        assert_eq!(*book.store("camera", Mask::none()), Mask::none());
        assert!(book.effective("camera").is_empty());
        book.store("camera", mask(0.7));
        assert_eq!(*book.effective("camera"), mask(0.7));
    }

    #[test]
    fn unreadable_stored_masks_hide_every_stream_until_set_again() {
        let file = BTreeMap::from([("camera".to_owned(), mask(0.1))]);
        let mut book = MaskBook::stored_unreadable(file);
        assert_eq!(*book.effective("camera"), Mask::full());
        assert_eq!(*book.effective("aula-2"), Mask::full());
        book.store("camera", Mask::none());
        assert!(book.effective("camera").is_empty());
        assert_eq!(*book.effective("aula-2"), Mask::full());
    }
}
