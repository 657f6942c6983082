//! Namespace names: hives, boxes, frames and columns, and dotted frame references.
//!
//! Names end up as directory names in the bucket (`<hive>/<box>/<frame>/`, and
//! `<column>=<value>/` for partition columns), so the rules here are about keeping keys
//! unambiguous and path-safe. Names beginning with `_` or `.` are reserved for Apiary's own
//! directories (`_ledger`, `_registry`, `_heartbeats`, ...).

use std::fmt;

use super::LakeError;

/// The hive `CREATE TABLE t` lands in when no hive is named.
pub const DEFAULT_HIVE: &str = "default";

/// The box `CREATE TABLE t` lands in when no box is named.
pub const DEFAULT_BOX: &str = "default";

/// The longest name allowed, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// What a name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameKind {
    /// A hive (database).
    Hive,
    /// A box (schema).
    Box,
    /// A frame (table).
    Frame,
    /// A column of a frame.
    Column,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Hive => "hive",
            NameKind::Box => "box",
            NameKind::Frame => "frame",
            NameKind::Column => "column",
        })
    }
}

/// Checks that `name` may name a `kind`.
///
/// | Rule | Hive, box, frame | Column |
/// |---|---|---|
/// | not empty, at most [`MAX_NAME_BYTES`] bytes | yes | yes |
/// | no `/`, `\`, `..`, `=` or control characters | yes | yes |
/// | does not begin with `.` | yes | yes |
/// | does not begin with `_` (reserved for `_ledger`, `_registry`, ...) | yes | no |
/// | no `.` at all (dots separate `hive.box.frame`) | yes | no |
///
/// Columns may begin with `_` (`_id` is a common column name) because a column only becomes
/// a directory as `<column>=<value>`, which never collides with a reserved directory.
///
/// # Errors
/// [`LakeError::InvalidName`] naming the kind, the name and the first rule broken.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), LakeError> {
    let rule = path_segment_problem(name, MAX_NAME_BYTES).or_else(|| match kind {
        NameKind::Column => None,
        NameKind::Hive | NameKind::Box | NameKind::Frame => {
            if name.starts_with('_') {
                Some("may not begin with `_` (reserved for Apiary's own directories)".to_owned())
            } else if name.contains('.') {
                Some("may not contain `.` (dots separate hive, box and frame)".to_owned())
            } else {
                None
            }
        }
    });
    match rule {
        None => Ok(()),
        Some(rule) => Err(LakeError::InvalidName {
            kind,
            name: name.to_owned(),
            rule,
        }),
    }
}

/// The first path-safety rule `segment` breaks, phrased to follow the value ("may not
/// contain `/`"), or `None` when it can be one directory name of a bucket key.
///
/// Shared by names and partition values: both become directory names.
pub(crate) fn path_segment_problem(segment: &str, max_bytes: usize) -> Option<String> {
    if segment.is_empty() {
        return Some("may not be empty".to_owned());
    }
    if segment.len() > max_bytes {
        return Some(format!(
            "is {} bytes long, over the limit of {max_bytes}",
            segment.len()
        ));
    }
    for forbidden in ["/", "\\", "..", "="] {
        if segment.contains(forbidden) {
            return Some(format!("may not contain `{forbidden}`"));
        }
    }
    if segment.chars().any(char::is_control) {
        return Some("may not contain control characters".to_owned());
    }
    if segment.starts_with('.') {
        return Some("may not begin with `.`".to_owned());
    }
    None
}

/// A fully qualified frame name: `hive.box.frame`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameRef {
    /// The hive (database).
    pub hive: String,
    /// The box (schema); `box` is a Rust keyword.
    pub box_name: String,
    /// The frame (table).
    pub frame: String,
}

impl FrameRef {
    /// A reference to `hive.box_name.frame`, checking each name.
    ///
    /// # Errors
    /// [`LakeError::InvalidName`] for the first name that breaks a rule of [`validate_name`].
    pub fn new(hive: &str, box_name: &str, frame: &str) -> Result<Self, LakeError> {
        validate_name(NameKind::Hive, hive)?;
        validate_name(NameKind::Box, box_name)?;
        validate_name(NameKind::Frame, frame)?;
        Ok(Self {
            hive: hive.to_owned(),
            box_name: box_name.to_owned(),
            frame: frame.to_owned(),
        })
    }

    /// Parses `frame`, `box.frame` or `hive.box.frame`, filling the missing parts from
    /// `default_hive` and `default_box` (usually [`DEFAULT_HIVE`] and [`DEFAULT_BOX`]).
    ///
    /// ```
    /// use apiary_engine::lake::FrameRef;
    /// let r = FrameRef::parse("sales.orders", "default", "default").expect("valid");
    /// assert_eq!(r.to_string(), "default.sales.orders");
    /// ```
    ///
    /// # Errors
    /// [`LakeError::InvalidFrameRef`] for more than three parts, [`LakeError::InvalidName`]
    /// when a part (or a default) breaks a naming rule, including an empty part (`a..b`).
    pub fn parse(s: &str, default_hive: &str, default_box: &str) -> Result<Self, LakeError> {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [frame] => Self::new(default_hive, default_box, frame),
            [box_name, frame] => Self::new(default_hive, box_name, frame),
            [hive, box_name, frame] => Self::new(hive, box_name, frame),
            _ => Err(LakeError::InvalidFrameRef {
                input: s.to_owned(),
                parts: parts.len(),
            }),
        }
    }

    /// The frame's directory relative to the lake root: `hive/box/frame`.
    pub fn dir(&self) -> String {
        format!("{}/{}/{}", self.hive, self.box_name, self.frame)
    }
}

impl fmt::Display for FrameRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.hive, self.box_name, self.frame)
    }
}

#[cfg(test)]
mod tests;
