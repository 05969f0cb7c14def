//! CIM values, instance names and instances: what the CIM-XML codec
//! decodes from requests and encodes into responses.

use crate::{CimType, Repository};

/// A property, parameter or key value.
#[derive(Clone, Debug, PartialEq)]
pub enum CimValue {
    /// No value.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// `string` (and `char16`).
    String(String),
    /// `datetime`, in CIM's text form.
    Datetime(String),
    /// `uint8` .. `uint64`.
    Uint(u64),
    /// `sint8` .. `sint64`.
    Sint(i64),
    /// `real32`, `real64`.
    Real(f64),
    /// A reference to an instance.
    Reference(InstanceName),
    /// An array of scalars of one type.
    Array(Vec<CimValue>),
}

impl CimValue {
    /// Parses the text of a `VALUE` element as a value of `cim_type`.
    pub fn parse(text: &str, cim_type: &CimType) -> Result<Self, String> {
        let text = text.trim();
        let bad = |what: &str| format!("{text:?} is not {what}");
        Ok(match cim_type {
            CimType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" => Self::Boolean(true),
                "false" => Self::Boolean(false),
                _ => return Err(bad("a boolean (TRUE or FALSE)")),
            },
            CimType::String => Self::String(text.to_string()),
            CimType::Datetime => Self::Datetime(text.to_string()),
            CimType::Uint(bits) => {
                let v: u64 = text.parse().map_err(|_| bad("an unsigned integer"))?;
                if *bits < 64 && v >> bits != 0 {
                    return Err(bad(&format!("a uint{bits}")));
                }
                Self::Uint(v)
            }
            CimType::Sint(bits) => {
                let v: i64 = text.parse().map_err(|_| bad("an integer"))?;
                let limit = 1i64.checked_shl(u32::from(*bits) - 1).unwrap_or(i64::MAX);
                if *bits < 64 && (v >= limit || v < -limit) {
                    return Err(bad(&format!("a sint{bits}")));
                }
                Self::Sint(v)
            }
            CimType::Real(_) => Self::Real(text.parse().map_err(|_| bad("a real number"))?),
            CimType::Reference(_) => return Err(bad("a reference (use VALUE.REFERENCE)")),
        })
    }

    /// The text of its `VALUE` element (`None` for null, arrays and references).
    pub fn text(&self) -> Option<String> {
        Some(match self {
            Self::Boolean(true) => "TRUE".into(),
            Self::Boolean(false) => "FALSE".into(),
            Self::String(s) | Self::Datetime(s) => s.clone(),
            Self::Uint(v) => v.to_string(),
            Self::Sint(v) => v.to_string(),
            Self::Real(v) => v.to_string(),
            Self::Null | Self::Reference(_) | Self::Array(_) => return None,
        })
    }

    /// The `VALUETYPE` of a `KEYVALUE` holding it.
    pub fn value_type(&self) -> &'static str {
        match self {
            Self::Boolean(_) => "boolean",
            Self::Uint(_) | Self::Sint(_) | Self::Real(_) => "numeric",
            _ => "string",
        }
    }

    /// Whether two key values are the same key (strings in any case and
    /// with their GUIDs in any form ([`guid_form`]), as WMI compares them;
    /// numbers by value, references as instance names).
    pub fn same_key(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Reference(a), Self::Reference(b)) => a.same(b),
            (Self::Reference(_), _) | (_, Self::Reference(_)) => false,
            (Self::String(a), Self::String(b)) => guid_form(a).eq_ignore_ascii_case(&guid_form(b)),
            (a, b) => match (a.text(), b.text()) {
                (Some(x), Some(y)) => x == y || (a.is_boolean() && x.eq_ignore_ascii_case(&y)),
                _ => false,
            },
        }
    }

    fn is_boolean(&self) -> bool {
        matches!(self, Self::Boolean(_))
    }
}

/// The length of a GUID's text without braces
/// (`8d2f0c4e-0000-4000-8000-000000000000`).
const GUID_TEXT_LEN: usize = 36;

/// Whether `text` is a GUID's text without braces, in any case.
fn is_guid_text(text: &[u8]) -> bool {
    text.len() == GUID_TEXT_LEN
        && text.iter().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// `text` with each GUID in it written as the daemon writes them: lower
/// case, without braces. WMI takes a GUID key as `{8D2F...}` or
/// `8d2f...`, in any case; so does everything that resolves a key through
/// this form (instance names decoded from requests, [`CimValue::same_key`]).
pub fn guid_form(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while i + GUID_TEXT_LEN <= bytes.len() {
        let braced = bytes[i] == b'{'
            && bytes.get(i + GUID_TEXT_LEN + 1) == Some(&b'}')
            && is_guid_text(&bytes[i + 1..=i + GUID_TEXT_LEN]);
        let (start, len) = if braced {
            (i + 1, GUID_TEXT_LEN + 2)
        } else if is_guid_text(&bytes[i..i + GUID_TEXT_LEN]) {
            (i, GUID_TEXT_LEN)
        } else {
            i += 1;
            continue;
        };
        // A GUID starts and ends on ASCII, so each slice is on a char boundary.
        let guid = &text[start..start + GUID_TEXT_LEN];
        if braced || guid.bytes().any(|b| b.is_ascii_uppercase()) {
            out.push_str(&text[copied..i]);
            out.push_str(&guid.to_ascii_lowercase());
            copied = i + len;
        }
        i += len;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// The identity of an instance: its class and key values (CIM's INSTANCENAME).
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceName {
    /// The namespace, when the path carried one.
    pub namespace: Option<String>,
    /// The class.
    pub class: String,
    /// Key property names and values, in order.
    pub keys: Vec<(String, CimValue)>,
}

impl InstanceName {
    /// A name in no particular namespace.
    pub fn new(class: impl Into<String>, keys: Vec<(String, CimValue)>) -> Self {
        Self {
            namespace: None,
            class: class.into(),
            keys,
        }
    }

    /// The value of key `name` (any case).
    pub fn key(&self, name: &str) -> Option<&CimValue> {
        self.keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The text of string key `name`.
    pub fn key_text(&self, name: &str) -> Option<&str> {
        match self.key(name) {
            Some(CimValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether both name the same instance (class and key names in any
    /// case, the namespace aside).
    pub fn same(&self, other: &Self) -> bool {
        self.class.eq_ignore_ascii_case(&other.class)
            && self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .all(|(k, v)| other.key(k).is_some_and(|w| v.same_key(w)))
    }
}

impl InstanceName {
    /// Parses the text form of an instance path, `Class.Key="text",Key2=3`
    /// (strings quoted with `\"` and `\\` escaped; bare `TRUE`/`FALSE`
    /// and numbers), as CIM clients print them; a namespace before `:` is
    /// kept. Reference keys are not supported in this form.
    pub fn parse_path(text: &str) -> Result<Self, String> {
        let (namespace, rest) = match text.split_once(':') {
            Some((ns, rest)) if !ns.contains('.') && !ns.contains('"') => {
                (Some(ns.to_string()), rest)
            }
            _ => (None, text),
        };
        let (class, mut keys_text) = rest.split_once('.').unwrap_or((rest, ""));
        if class.is_empty() || !class.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{text:?} is not an instance path: expected CLASS.KEY=\"VALUE\",..."
            ));
        }
        let mut keys = Vec::new();
        while !keys_text.is_empty() {
            let (key, after) = keys_text
                .split_once('=')
                .ok_or_else(|| format!("{text:?}: expected KEY=VALUE after {class}."))?;
            let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c)) => value.push(c),
                            None => return Err(format!("{text:?}: a string that does not end")),
                        },
                        Some((i, '"')) => break i + 1,
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("{text:?}: a string that does not end")),
                    }
                };
                (CimValue::String(value), &quoted[end..])
            } else {
                let (bare, after) = after.split_at(after.find(',').unwrap_or(after.len()));
                let value =
                    if bare.eq_ignore_ascii_case("true") || bare.eq_ignore_ascii_case("false") {
                        CimValue::Boolean(bare.eq_ignore_ascii_case("true"))
                    } else if let Ok(v) = bare.parse::<u64>() {
                        CimValue::Uint(v)
                    } else if let Ok(v) = bare.parse::<i64>() {
                        CimValue::Sint(v)
                    } else {
                        return Err(format!("{text:?}: the value of {key} must be quoted"));
                    };
                (value, after)
            };
            keys.push((key.trim().to_string(), value));
            keys_text = match after.strip_prefix(',') {
                Some(next) if !next.is_empty() => next,
                None if after.is_empty() => "",
                _ => {
                    return Err(format!(
                        "{text:?}: expected ,KEY=VALUE after the value of {key}"
                    ))
                }
            };
        }
        Ok(Self {
            namespace,
            class: class.to_string(),
            keys,
        })
    }
}

impl std::fmt::Display for InstanceName {
    /// The text form [`InstanceName::parse_path`] reads (references keys
    /// inside, escaped).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}:")?;
        }
        f.write_str(&self.class)?;
        for (i, (key, value)) in self.keys.iter().enumerate() {
            f.write_str(if i == 0 { "." } else { "," })?;
            let text = match value {
                CimValue::Reference(r) => r.to_string(),
                CimValue::String(s) | CimValue::Datetime(s) => s.clone(),
                other => {
                    write!(f, "{key}={}", other.text().unwrap_or_default())?;
                    continue;
                }
            };
            write!(
                f,
                "{key}=\"{}\"",
                text.replace('\\', "\\\\").replace('"', "\\\"")
            )?;
        }
        Ok(())
    }
}

/// An instance: its class and property values (those it has; the class's
/// other properties are null).
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The class.
    pub class: String,
    /// Property names and values.
    pub properties: Vec<(String, CimValue)>,
}

impl Instance {
    /// The value of property `name` (any case).
    pub fn get(&self, name: &str) -> Option<&CimValue> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Its name: the class and the values of the class's keys in `repo`.
    pub fn path(&self, repo: &Repository) -> InstanceName {
        let keys = repo
            .keys(&self.class)
            .into_iter()
            .map(|p| {
                let v = self.get(&p.name).cloned().unwrap_or(CimValue::Null);
                (p.name.clone(), v)
            })
            .collect();
        InstanceName::new(self.class.clone(), keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_in_key_text_read_in_one_form() {
        let guid = "8d2f0c4e-1a2b-4c3d-9e8f-0123456789ab";
        assert_eq!(guid_form(guid), guid);
        assert_eq!(guid_form(&guid.to_uppercase()), guid);
        assert_eq!(guid_form(&format!("{{{}}}", guid.to_uppercase())), guid);
        assert_eq!(
            guid_form(&format!("Microsoft:{{{guid}}}\\{}", guid.to_uppercase())),
            format!("Microsoft:{guid}\\{guid}")
        );
        for kept in ["web1", "{web1}", "{8d2f0c4e}", "é{", "Microsoft:x\\y"] {
            assert_eq!(guid_form(kept), kept);
        }
        let a = CimValue::String(format!("Microsoft:{{{}}}", guid.to_uppercase()));
        let b = CimValue::String(format!("microsoft:{guid}"));
        assert!(a.same_key(&b));
        assert!(!a.same_key(&CimValue::String("microsoft:x".into())));
        assert!(CimValue::String("Host".into()).same_key(&CimValue::String("HOST".into())));
    }

    #[test]
    fn values_parse_by_type_and_refuse_out_of_range() {
        assert_eq!(
            CimValue::parse("TRUE", &CimType::Boolean),
            Ok(CimValue::Boolean(true))
        );
        assert_eq!(
            CimValue::parse("65535", &CimType::Uint(16)),
            Ok(CimValue::Uint(65535))
        );
        assert!(CimValue::parse("65536", &CimType::Uint(16)).is_err());
        assert!(CimValue::parse("-1", &CimType::Uint(64)).is_err());
        assert_eq!(
            CimValue::parse("-128", &CimType::Sint(8)),
            Ok(CimValue::Sint(-128))
        );
        assert!(CimValue::parse("128", &CimType::Sint(8)).is_err());
        assert!(CimValue::parse("yes", &CimType::Boolean).is_err());
        assert!(CimValue::parse("x", &CimType::Reference("A".into())).is_err());
    }

    #[test]
    fn paths_print_and_parse_back() {
        let name = InstanceName::new(
            "Msvm_GuestCommunicationService",
            vec![
                (
                    "Name".into(),
                    CimValue::String("a \"quoted\" \\ name, with comma".into()),
                ),
                ("N".into(), CimValue::Uint(3)),
                ("B".into(), CimValue::Boolean(true)),
            ],
        );
        let text = name.to_string();
        assert_eq!(InstanceName::parse_path(&text), Ok(name));
        let ns = InstanceName::parse_path("root/virtualization/v2:A.K=\"v\"").unwrap();
        assert_eq!(ns.namespace.as_deref(), Some("root/virtualization/v2"));
        assert_eq!(ns.key_text("k"), Some("v"));
        assert_eq!(InstanceName::parse_path("A").unwrap().keys, vec![]);
        for bad in [
            "",
            ".K=1",
            "A.K",
            "A.K=\"x",
            "A.K=x",
            "A.K=1,",
            "A.K=\"x\"y",
            "A B.K=1",
        ] {
            assert!(InstanceName::parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_names_compare_keys_whatever_their_case_and_order() {
        let a = InstanceName::new(
            "Msvm_ComputerSystem",
            vec![
                ("Name".into(), CimValue::String("v".into())),
                ("CreationClassName".into(), CimValue::String("x".into())),
            ],
        );
        let mut b = a.clone();
        b.class = "msvm_computersystem".into();
        b.keys.reverse();
        b.keys[0].0 = "creationclassname".into();
        assert!(a.same(&b));
        // String values in any case, as WMI compares them.
        b.keys[1].1 = CimValue::String("V".into());
        assert!(a.same(&b));
        b.keys[1].1 = CimValue::String("w".into());
        assert!(!a.same(&b));
    }
}
