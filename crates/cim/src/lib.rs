//! The management model of guestcomm as CIM classes: Hyper-V's
//! Msvm_GuestCommunicationService and its family, the DMTF classes they
//! derive from, and guestcomm's own integration-service classes.
//!
//! The classes are written once, in `classes.mof` (a MOF subset, module
//! [`mof`]), and parsed into a [`Repository`] that answers what a CIM
//! server needs: a class and its superclasses, every property with the
//! class it comes from, the keys, the methods, the subclasses. Class names
//! are case-insensitive, as in CIM.
//!
//! The WBEM side lives beside it: [`xml`] decodes CIM-XML requests and
//! encodes answers (DMTF DSP0201), [`wql`] parses and evaluates the WQL
//! subset of ExecQuery, [`value`] holds instances and their names, and
//! [`status`] the CIM status codes of errors and the methods' return
//! values.

mod associations;
pub mod limits;
pub mod mof;
pub mod status;
pub mod value;
pub mod wql;
pub mod xml;

use std::collections::BTreeMap;

pub use associations::ClassLink;
pub use status::{CimError, CimStatus, ReturnValue};

/// The class definitions guestcommd serves.
pub const CLASSES_MOF: &str = include_str!("../classes.mof");

/// The namespace the classes live in, as on Hyper-V.
pub const NAMESPACE: &str = "root/virtualization/v2";

/// Why a MOF source was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MofError {
    /// The text does not follow the grammar.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A class is declared twice.
    #[error("line {line}: class {name} is declared twice")]
    Duplicate {
        /// The class.
        name: String,
        /// Its second declaration.
        line: usize,
    },
    /// A superclass or reference names no class declared before.
    #[error("line {line}: {what} {name} is not a known class")]
    UnknownClass {
        /// What names it ("superclass of X", "reference Y of X").
        what: String,
        /// The missing class.
        name: String,
        /// Where.
        line: usize,
    },
    /// The source is larger than [`mof::MAX_MOF_BYTES`].
    #[error("the MOF source has {0} bytes, more than the limit")]
    TooLarge(usize),
}

/// A CIM data type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CimType {
    /// `boolean`.
    Boolean,
    /// `string`.
    String,
    /// `datetime` (CIM's `yyyymmddhhmmss.mmmmmmsutc`).
    Datetime,
    /// `uint8` .. `uint64`, by bits.
    Uint(u8),
    /// `sint8` .. `sint64`, by bits.
    Sint(u8),
    /// `real32`, `real64`, by bits.
    Real(u8),
    /// A reference to an instance of the named class.
    Reference(String),
}

impl CimType {
    /// The type named `name` in MOF (not a reference).
    pub fn from_mof(name: &str) -> Option<Self> {
        let t = match name.to_ascii_lowercase().as_str() {
            "boolean" => Self::Boolean,
            "string" => Self::String,
            "datetime" => Self::Datetime,
            "uint8" => Self::Uint(8),
            "uint16" => Self::Uint(16),
            "uint32" => Self::Uint(32),
            "uint64" => Self::Uint(64),
            "sint8" => Self::Sint(8),
            "sint16" => Self::Sint(16),
            "sint32" => Self::Sint(32),
            "sint64" => Self::Sint(64),
            "real32" => Self::Real(32),
            "real64" => Self::Real(64),
            _ => return None,
        };
        Some(t)
    }

    /// The name CIM-XML uses (`TYPE=` of a property; `reference` for refs).
    pub fn cim_name(&self) -> String {
        match self {
            Self::Boolean => "boolean".into(),
            Self::String => "string".into(),
            Self::Datetime => "datetime".into(),
            Self::Uint(bits) => format!("uint{bits}"),
            Self::Sint(bits) => format!("sint{bits}"),
            Self::Real(bits) => format!("real{bits}"),
            Self::Reference(_) => "reference".into(),
        }
    }
}

/// A MOF literal: a qualifier's value or a property's default value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    /// `true` or `false`.
    Boolean(bool),
    /// `"text"` (adjacent strings joined).
    String(String),
    /// A decimal integer.
    Integer(i64),
    /// `{ literal, ... }`.
    Array(Vec<Literal>),
}

impl Literal {
    /// The text of a scalar as CIM-XML's `VALUE` holds it (`None` for an array).
    pub fn value_text(&self) -> Option<String> {
        match self {
            Self::Boolean(b) => Some(if *b { "TRUE" } else { "FALSE" }.into()),
            Self::String(s) => Some(s.clone()),
            Self::Integer(i) => Some(i.to_string()),
            Self::Array(_) => None,
        }
    }
}

/// A qualifier other than those with a field of their own (Key, In, Out,
/// Abstract, Association, Description): ValueMap, Values, MaxLen,
/// EmbeddedInstance, Override, Aggregation, ... ([`mof::QUALIFIER_TYPES`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qualifier {
    /// Its name, as DMTF spells it.
    pub name: String,
    /// Its CIM type (`boolean`, `string`, `uint32`), of each element for an array.
    pub cim_type: &'static str,
    /// Its value.
    pub value: Literal,
}

/// The qualifiers of a class, member or parameter (those the MOF uses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Qualifiers {
    /// `Abstract`: no instances of its own.
    pub abstract_: bool,
    /// `Association`: its instances relate two others (REF keys).
    pub association: bool,
    /// `Key`: part of an instance's identity.
    pub key: bool,
    /// `In`: a method input.
    pub input: bool,
    /// `Out`: a method output.
    pub output: bool,
    /// `Description("...")`.
    pub description: Option<String>,
    /// Every other qualifier, in source order.
    pub others: Vec<Qualifier>,
}

/// A property of a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Its name.
    pub name: String,
    /// Its type.
    pub cim_type: CimType,
    /// An array of that type.
    pub array: bool,
    /// Part of the instance's key.
    pub key: bool,
    /// Description qualifier.
    pub description: Option<String>,
    /// Its other qualifiers.
    pub qualifiers: Vec<Qualifier>,
    /// Its default value (`= literal` in MOF).
    pub default: Option<Literal>,
    /// The class that declares it (CIM's CLASSORIGIN).
    pub class_origin: String,
}

impl Property {
    /// Its qualifier `name` (any case), if it has one.
    pub fn qualifier(&self, name: &str) -> Option<&Literal> {
        find(&self.qualifiers, name)
    }
}

/// The value of qualifier `name` (any case) in `qualifiers`.
fn find<'a>(qualifiers: &'a [Qualifier], name: &str) -> Option<&'a Literal> {
    qualifiers
        .iter()
        .find(|q| q.name.eq_ignore_ascii_case(name))
        .map(|q| &q.value)
}

/// A method parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// Its type.
    pub cim_type: CimType,
    /// An array of that type.
    pub array: bool,
    /// Passed in (the default when neither In nor Out is given).
    pub input: bool,
    /// Passed back.
    pub output: bool,
    /// Its other qualifiers.
    pub qualifiers: Vec<Qualifier>,
}

/// A method of a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Method {
    /// Its name.
    pub name: String,
    /// The return value's type.
    pub return_type: CimType,
    /// Its parameters, in order.
    pub parameters: Vec<Parameter>,
    /// Description qualifier.
    pub description: Option<String>,
    /// Its other qualifiers.
    pub qualifiers: Vec<Qualifier>,
}

/// A class as declared (its own members only; see [`Repository`] for the
/// inherited ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// Its name.
    pub name: String,
    /// The class it derives from.
    pub superclass: Option<String>,
    /// No instances of its own.
    pub is_abstract: bool,
    /// An association class.
    pub association: bool,
    /// Description qualifier.
    pub description: Option<String>,
    /// Its other qualifiers.
    pub qualifiers: Vec<Qualifier>,
    /// Properties it declares (or overrides).
    pub properties: Vec<Property>,
    /// Methods it declares (or overrides).
    pub methods: Vec<Method>,
    /// Line of its declaration in the source.
    pub line: usize,
}

/// Every class, checked: superclasses declared first, references to known
/// classes, no name twice.
#[derive(Clone, Debug)]
pub struct Repository {
    /// By lower-cased name.
    classes: BTreeMap<String, Class>,
    /// Declaration order (lower-cased names).
    order: Vec<String>,
}

fn folded(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Repository {
    /// The built-in classes of [`CLASSES_MOF`].
    pub fn builtin() -> Result<Self, MofError> {
        Self::parse(CLASSES_MOF)
    }

    /// Parses and checks a MOF source.
    pub fn parse(source: &str) -> Result<Self, MofError> {
        let mut repo = Self {
            classes: BTreeMap::new(),
            order: Vec::new(),
        };
        for class in mof::parse(source)? {
            let key = folded(&class.name);
            if repo.classes.contains_key(&key) {
                return Err(MofError::Duplicate {
                    name: class.name,
                    line: class.line,
                });
            }
            if let Some(sup) = &class.superclass {
                if !repo.classes.contains_key(&folded(sup)) {
                    return Err(MofError::UnknownClass {
                        what: format!("superclass of {}", class.name),
                        name: sup.clone(),
                        line: class.line,
                    });
                }
            }
            repo.order.push(key.clone());
            repo.classes.insert(key, class);
        }
        // References may name classes declared later.
        for class in repo.classes.values() {
            let refs = class
                .properties
                .iter()
                .map(|p| (&p.name, &p.cim_type))
                .chain(class.methods.iter().flat_map(|m| {
                    m.parameters
                        .iter()
                        .map(|p| (&p.name, &p.cim_type))
                        .chain(std::iter::once((&m.name, &m.return_type)))
                }));
            for (member, t) in refs {
                if let CimType::Reference(target) = t {
                    if !repo.classes.contains_key(&folded(target)) {
                        return Err(MofError::UnknownClass {
                            what: format!("reference {member} of {}", class.name),
                            name: target.clone(),
                            line: class.line,
                        });
                    }
                }
            }
        }
        for class in repo.classes() {
            repo.check_qualifiers(class)?;
        }
        Ok(repo)
    }

    /// `Override("X")` names a property of a superclass (and sits on a
    /// property called X); `ValueMap` and `Values` pair one to one.
    fn check_qualifiers(&self, class: &Class) -> Result<(), MofError> {
        let bad = |message: String| MofError::Syntax {
            line: class.line,
            message,
        };
        let inherited = class
            .superclass
            .as_deref()
            .map(|s| self.properties(s))
            .unwrap_or_default();
        for p in &class.properties {
            if let Some(Literal::String(overridden)) = p.qualifier("Override") {
                let found = inherited
                    .iter()
                    .any(|i| i.name.eq_ignore_ascii_case(overridden));
                if !found || !overridden.eq_ignore_ascii_case(&p.name) {
                    return Err(bad(format!(
                        "{}.{} overrides {overridden}, which no superclass declares under that name",
                        class.name, p.name
                    )));
                }
            }
        }
        let members = class
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.qualifiers.as_slice()))
            .chain(class.methods.iter().flat_map(|m| {
                std::iter::once((m.name.as_str(), m.qualifiers.as_slice())).chain(
                    m.parameters
                        .iter()
                        .map(|p| (p.name.as_str(), p.qualifiers.as_slice())),
                )
            }));
        for (member, qualifiers) in members {
            if let (Some(Literal::Array(map)), Some(Literal::Array(values))) =
                (find(qualifiers, "ValueMap"), find(qualifiers, "Values"))
            {
                if map.len() != values.len() {
                    return Err(bad(format!(
                        "{}.{member} has {} ValueMap entries and {} Values",
                        class.name,
                        map.len(),
                        values.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The class named `name` (any case).
    pub fn class(&self, name: &str) -> Option<&Class> {
        self.classes.get(&folded(name))
    }

    /// Every class, in declaration order (superclasses first).
    pub fn classes(&self) -> impl Iterator<Item = &Class> {
        self.order.iter().filter_map(|k| self.classes.get(k))
    }

    /// `name` and its superclasses, the class itself first.
    pub fn lineage(&self, name: &str) -> Vec<&Class> {
        let mut chain = Vec::new();
        let mut next = self.class(name);
        while let Some(class) = next {
            chain.push(class);
            next = class.superclass.as_deref().and_then(|s| self.class(s));
        }
        chain
    }

    /// Whether `name` is `ancestor` or derives from it.
    pub fn is_a(&self, name: &str, ancestor: &str) -> bool {
        self.lineage(name)
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(ancestor))
    }

    /// Every property of `name`, inherited ones first, an override in place
    /// of what it overrides.
    pub fn properties(&self, name: &str) -> Vec<&Property> {
        self.inherited(name, |c| &c.properties, |p| &p.name)
    }

    /// The members `of` each class in `name`'s lineage, from the root down;
    /// a member declared again (an override) takes the place of the one it
    /// overrides.
    fn inherited<'a, T>(
        &'a self,
        name: &str,
        of: impl Fn(&'a Class) -> &'a [T],
        name_of: impl Fn(&T) -> &str,
    ) -> Vec<&'a T> {
        let mut all: Vec<&'a T> = Vec::new();
        for class in self.lineage(name).into_iter().rev() {
            for member in of(class) {
                match all
                    .iter_mut()
                    .find(|m| name_of(m).eq_ignore_ascii_case(name_of(member)))
                {
                    Some(slot) => *slot = member,
                    None => all.push(member),
                }
            }
        }
        all
    }

    /// The key properties of `name`.
    pub fn keys(&self, name: &str) -> Vec<&Property> {
        self.properties(name)
            .into_iter()
            .filter(|p| p.key)
            .collect()
    }

    /// Every method of `name`, inherited ones included.
    pub fn methods(&self, name: &str) -> Vec<&Method> {
        self.inherited(name, |c| &c.methods, |m| &m.name)
    }

    /// Classes derived from `name` (`deep`: at any depth; else direct),
    /// in declaration order; every class when `name` is `None`/top level.
    pub fn subclasses(&self, name: Option<&str>, deep: bool) -> Vec<&Class> {
        self.classes()
            .filter(|c| match (name, deep) {
                (None, false) => c.superclass.is_none(),
                (None, true) => true,
                (Some(n), false) => c
                    .superclass
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(n)),
                (Some(n), true) => !c.name.eq_ignore_ascii_case(n) && self.is_a(&c.name, n),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repository {
        Repository::builtin().unwrap()
    }

    #[test]
    fn the_guest_communication_service_has_hyper_vs_lineage_and_keys() {
        let r = repo();
        let lineage: Vec<&str> = r
            .lineage("msvm_guestcommunicationservice")
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            lineage,
            [
                "Msvm_GuestCommunicationService",
                "Msvm_GuestService",
                "CIM_Service",
                "CIM_EnabledLogicalElement",
                "CIM_LogicalElement",
                "CIM_ManagedSystemElement",
                "CIM_ManagedElement"
            ]
        );
        let mut keys: Vec<&str> = r
            .keys("Msvm_GuestCommunicationService")
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        keys.sort_unstable();
        // Name is CIM_ManagedSystemElement's, made a key by CIM_Service.
        assert_eq!(
            keys,
            [
                "CreationClassName",
                "Name",
                "SystemCreationClassName",
                "SystemName"
            ]
        );
        let names: Vec<&str> = r
            .properties("Msvm_GuestCommunicationService")
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        for documented in [
            "Caption",
            "CreationClassName",
            "Description",
            "ElementName",
            "InstallDate",
            "Name",
            "Started",
            "StartMode",
            "Status",
            "SystemCreationClassName",
            "SystemName",
            "EnabledState",
            "RequestedState",
            "PrimaryOwnerName",
            "PrimaryOwnerContact",
        ] {
            assert!(
                names.contains(&documented),
                "{documented} missing: {names:?}"
            );
        }
        let started = r
            .properties("Msvm_GuestCommunicationService")
            .into_iter()
            .find(|p| p.name == "Started")
            .unwrap();
        assert_eq!(
            (started.cim_type.clone(), started.class_origin.as_str()),
            (CimType::Boolean, "CIM_Service")
        );
        assert!(r.class("Msvm_GuestService").unwrap().is_abstract);
        assert!(
            !r.class("Msvm_GuestCommunicationService")
                .unwrap()
                .is_abstract
        );
    }

    #[test]
    fn methods_are_inherited_with_their_parameters() {
        let r = repo();
        let methods: Vec<&str> = r
            .methods("Msvm_GuestFileService")
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            methods,
            [
                "RequestStateChange",
                "StartService",
                "StopService",
                "CopyFilesToGuest"
            ]
        );
        let rsc = r
            .methods("Msvm_GuestCommunicationService")
            .into_iter()
            .find(|m| m.name == "RequestStateChange")
            .unwrap();
        assert_eq!(rsc.return_type, CimType::Uint(32));
        let job = &rsc.parameters[1];
        assert_eq!(job.cim_type, CimType::Reference("CIM_ConcreteJob".into()));
        assert!(job.output && !job.input);
        assert!(rsc.parameters[0].input && !rsc.parameters[0].output);
        let copy = r
            .methods("Msvm_GuestFileService")
            .into_iter()
            .find(|m| m.name == "CopyFilesToGuest")
            .unwrap();
        assert!(copy.parameters[0].array);
    }

    #[test]
    fn the_association_narrows_its_references() {
        let r = repo();
        let class = r.class("Msvm_RegisteredGuestService").unwrap();
        assert!(class.association);
        let props = r.properties("Msvm_RegisteredGuestService");
        assert_eq!(props.len(), 2, "overrides replace, not add");
        assert_eq!(
            props[0].cim_type,
            CimType::Reference("Msvm_GuestServiceInterfaceComponent".into())
        );
        assert!(props.iter().all(|p| p.key));
        assert!(r.is_a("Msvm_RegisteredGuestService", "cim_dependency"));
    }

    #[test]
    fn subclasses_direct_and_deep() {
        let r = repo();
        let direct: Vec<&str> = r
            .subclasses(Some("Msvm_GuestService"), false)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(direct.contains(&"Msvm_GuestCommunicationService"));
        assert!(direct.contains(&"Guestcomm_KvpExchangeService"));
        let deep = r.subclasses(Some("CIM_Service"), true);
        assert!(deep.iter().any(|c| c.name == "Msvm_GuestFileService"));
        assert!(!deep.iter().any(|c| c.name == "CIM_Service"));
        let roots: Vec<&str> = r
            .subclasses(None, false)
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            roots,
            [
                "CIM_ManagedElement",
                "CIM_Error",
                "CIM_Dependency",
                "CIM_Component",
                "CIM_SettingsDefineState"
            ]
        );
    }

    #[test]
    fn qualifiers_and_defaults_are_kept_with_their_types() {
        let repo = Repository::parse(
            "class A { [Key, MaxLen(64)] string Id; [ValueMap {\"2\", \"3\"}, Values {\"Enabled\", \"Dis\" \"abled\"}] uint16 S = 3; };\n\
             [Aggregation, Association] class B { [Key] string Id; };\n\
             class C : A { [Override(\"Id\")] string Id; boolean F[] = {true, false}; };",
        )
        .unwrap();
        let s = &repo.class("A").unwrap().properties[1];
        assert_eq!(s.default, Some(Literal::Integer(3)));
        assert_eq!(
            s.qualifier("values"),
            Some(&Literal::Array(vec![
                Literal::String("Enabled".into()),
                Literal::String("Disabled".into())
            ]))
        );
        let id = &repo.class("A").unwrap().properties[0];
        assert_eq!(id.qualifiers[0].cim_type, "uint32");
        let b = repo.class("B").unwrap();
        assert_eq!(b.qualifiers[0].name, "Aggregation");
        assert_eq!(b.qualifiers[0].value, Literal::Boolean(true));
        let f = &repo.class("C").unwrap().properties[1];
        assert_eq!(
            f.default,
            Some(Literal::Array(vec![
                Literal::Boolean(true),
                Literal::Boolean(false)
            ]))
        );
    }

    #[test]
    fn bad_sources_are_refused_with_their_line() {
        let cases = [
            ("class A {\n  strin x;\n};", "line 2: unknown type strin"),
            (
                "class A : B {\n};",
                "line 1: superclass of A B is not a known class",
            ),
            (
                "class A {};\nclass a {};",
                "line 2: class a is declared twice",
            ),
            (
                "class A {\n  B REF r;\n};",
                "reference r of A B is not a known class",
            ),
            (
                "[Bogus] class A {};",
                "line 1: unknown or misused qualifier Bogus",
            ),
            ("class A {\n  string s\n};", "line 3: expected ';'"),
            (
                "class A {\n string \"x;\n};",
                "line 2: a string that does not end on its line",
            ),
            (
                "class A {\n string 5;\n};",
                "line 2: expected a property or method name",
            ),
            (
                "class A {\n string s = 5;\n};",
                "line 2: the default value does not fit string",
            ),
            (
                "class A {\n [MaxLen(\"x\")] string s;\n};",
                "line 2: qualifier MaxLen takes a uint32",
            ),
            (
                "class A {\n [ValueMap(\"2\")] uint16 s;\n};",
                "line 2: qualifier ValueMap takes an array of string",
            ),
            (
                "class A {\n [ValueMap {\"2\", \"3\"}, Values {\"On\"}] uint16 s;\n};",
                "A.s has 2 ValueMap entries and 1 Values",
            ),
            (
                "class A { string s; };\nclass B : A {\n [Override(\"t\")] string t;\n};",
                "B.t overrides t, which no superclass declares under that name",
            ),
            (
                "class A { [Values {{\"x\"}}] string s; };",
                "an array inside an array",
            ),
            ("class A { string s; }", "expected ';'"),
            ("/ class", "a lone '/'"),
        ];
        for (source, expected) in cases {
            let err = Repository::parse(source).unwrap_err().to_string();
            assert!(err.contains(expected), "{source:?}: {err}");
        }
        let huge = " ".repeat(mof::MAX_MOF_BYTES + 1);
        assert_eq!(
            Repository::parse(&huge).unwrap_err(),
            MofError::TooLarge(huge.len())
        );
    }
}
