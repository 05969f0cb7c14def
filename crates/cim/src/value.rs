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

    /// Whether two key values are the same key (strings exactly, numbers
    /// by value, references as instance names).
    pub fn same_key(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Reference(a), Self::Reference(b)) => a.same(b),
            (Self::Reference(_), _) | (_, Self::Reference(_)) => false,
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
        b.keys[1].1 = CimValue::String("V".into());
        assert!(!a.same(&b));
    }
}
