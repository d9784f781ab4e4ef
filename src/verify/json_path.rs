//! Dotted JSON paths with `[n]` indexes (`components.db.status`, `content[0].id`).

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted path with `[n]` indexes: `token`, `components.db.status`, `content[0].id`, `[2]`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct JsonPath {
    pub(super) text: String,
    pub(super) segments: Vec<Segment>,
}

impl JsonPath {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("JSON path `{text}` {why} (write it like `items[0].id`)");
        if text.trim().is_empty() {
            return Err("JSON path is empty".to_owned());
        }
        let mut segments = Vec::new();
        for piece in text.split('.') {
            if piece.is_empty() {
                return Err(invalid("has an empty segment"));
            }
            let (key, mut indexes) = piece.split_at(piece.find('[').unwrap_or(piece.len()));
            if key.contains(']') {
                return Err(invalid("has a `]` without `[`"));
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_owned()));
            }
            while let Some(inside) = indexes.strip_prefix('[') {
                let Some(close) = inside.find(']') else {
                    return Err(invalid("has a `[` without `]`"));
                };
                let index = inside[..close]
                    .parse::<usize>()
                    .map_err(|_| invalid("has an index that is not a number"))?;
                segments.push(Segment::Index(index));
                indexes = &inside[close + 1..];
            }
            if !indexes.is_empty() {
                return Err(invalid("has text after `]`"));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub(super) fn lookup<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(value, |value, segment| match segment {
                Segment::Key(key) => value.get(key.as_str()),
                Segment::Index(index) => value.get(*index),
            })
    }
}
