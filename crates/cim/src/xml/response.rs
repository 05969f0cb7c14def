//! Encoding CIM-XML responses: the `CIM/MESSAGE/SIMPLERSP` envelope of an
//! intrinsic (`IMETHODRESPONSE`/`IRETURNVALUE`) or extrinsic
//! (`METHODRESPONSE`/`RETURNVALUE`) answer or its `ERROR`, and the objects
//! inside: classes from the [`Repository`], instances with their paths.
//! Every text and attribute is escaped here, nowhere else.

use std::fmt::Write;

use crate::status::CimError;
use crate::value::{CimValue, Instance, InstanceName};
use crate::{CimType, Class, Literal, Parameter, Property, Qualifier, Repository};

/// Host named in the `INSTANCEPATH`s of answers.
pub const HOST: &str = "localhost";

/// `text` with XML's special characters escaped (text and attributes).
pub(crate) fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

fn envelope(id: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="{}" PROTOCOLVERSION="1.0"><SIMPLERSP>{body}</SIMPLERSP></MESSAGE></CIM>"#,
        esc(id)
    )
}

/// `<ERROR CODE=.. DESCRIPTION=../>`.
pub fn error(err: &CimError) -> String {
    format!(
        r#"<ERROR CODE="{}" DESCRIPTION="{}"/>"#,
        err.status.code(),
        esc(&err.description)
    )
}

/// The answer to intrinsic operation `name`: `objects` (already encoded)
/// in an `IRETURNVALUE`, or the error.
pub fn imethod_response(id: &str, name: &str, result: Result<&str, &CimError>) -> String {
    let inner = match result {
        Ok(objects) => format!("<IRETURNVALUE>{objects}</IRETURNVALUE>"),
        Err(e) => error(e),
    };
    envelope(
        id,
        &format!(
            r#"<IMETHODRESPONSE NAME="{}">{inner}</IMETHODRESPONSE>"#,
            esc(name)
        ),
    )
}

/// What a method returned: its return value and output parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodReturn {
    /// The return value (a `uint32` code in this model).
    pub value: CimValue,
    /// Its type.
    pub value_type: CimType,
    /// Output parameters: name, value, type.
    pub outputs: Vec<(String, CimValue, CimType)>,
}

/// The answer to method `name`.
pub fn method_response(
    id: &str,
    name: &str,
    namespace: &str,
    result: Result<&MethodReturn, &CimError>,
) -> String {
    let inner = match result {
        Err(e) => error(e),
        Ok(ret) => {
            let mut out = format!(
                r#"<RETURNVALUE PARAMTYPE="{}">{}</RETURNVALUE>"#,
                ret.value_type.cim_name(),
                scalar_value(&ret.value, namespace)
            );
            for (name, value, t) in &ret.outputs {
                let _ = write!(
                    out,
                    r#"<PARAMVALUE NAME="{}" PARAMTYPE="{}">{}</PARAMVALUE>"#,
                    esc(name),
                    t.cim_name(),
                    any_value(value, namespace)
                );
            }
            out
        }
    };
    envelope(
        id,
        &format!(
            r#"<METHODRESPONSE NAME="{}">{inner}</METHODRESPONSE>"#,
            esc(name)
        ),
    )
}

/// `VALUE`, `VALUE.REFERENCE`, `VALUE.ARRAY` or `VALUE.REFARRAY` (an
/// array of references) of a value; nothing for null.
fn any_value(value: &CimValue, namespace: &str) -> String {
    match value {
        CimValue::Array(items)
            if !items.is_empty() && items.iter().all(|i| matches!(i, CimValue::Reference(_))) =>
        {
            let inner: String = items.iter().map(|i| scalar_value(i, namespace)).collect();
            format!("<VALUE.REFARRAY>{inner}</VALUE.REFARRAY>")
        }
        CimValue::Array(items) => {
            let mut out = String::from("<VALUE.ARRAY>");
            for item in items {
                match item {
                    CimValue::Null => out.push_str("<VALUE.NULL/>"),
                    other => out.push_str(&scalar_value(other, namespace)),
                }
            }
            out.push_str("</VALUE.ARRAY>");
            out
        }
        other => scalar_value(other, namespace),
    }
}

fn scalar_value(value: &CimValue, namespace: &str) -> String {
    match value {
        CimValue::Reference(name) => format!(
            "<VALUE.REFERENCE>{}</VALUE.REFERENCE>",
            local_instance_path(name, namespace)
        ),
        other => match other.text() {
            Some(text) => format!("<VALUE>{}</VALUE>", esc(&text)),
            None => String::new(),
        },
    }
}

/// `LOCALNAMESPACEPATH` of `a/b/c`.
pub(crate) fn local_namespace_path(namespace: &str) -> String {
    let mut out = String::from("<LOCALNAMESPACEPATH>");
    for part in namespace.split('/').filter(|p| !p.is_empty()) {
        let _ = write!(out, r#"<NAMESPACE NAME="{}"/>"#, esc(part));
    }
    out.push_str("</LOCALNAMESPACEPATH>");
    out
}

fn local_instance_path(name: &InstanceName, namespace: &str) -> String {
    let ns = name.namespace.as_deref().unwrap_or(namespace);
    format!(
        "<LOCALINSTANCEPATH>{}{}</LOCALINSTANCEPATH>",
        local_namespace_path(ns),
        instance_name(name, namespace)
    )
}

/// `INSTANCEPATH`: host, namespace, instance name.
pub fn instance_path(name: &InstanceName, namespace: &str) -> String {
    let ns = name.namespace.as_deref().unwrap_or(namespace);
    format!(
        "<INSTANCEPATH><NAMESPACEPATH><HOST>{HOST}</HOST>{}</NAMESPACEPATH>{}</INSTANCEPATH>",
        local_namespace_path(ns),
        instance_name(name, namespace)
    )
}

/// `INSTANCENAME` with its `KEYBINDING`s (references as `VALUE.REFERENCE`
/// in `namespace`).
pub fn instance_name(name: &InstanceName, namespace: &str) -> String {
    let mut out = format!(r#"<INSTANCENAME CLASSNAME="{}">"#, esc(&name.class));
    for (key, value) in &name.keys {
        let _ = write!(out, r#"<KEYBINDING NAME="{}">"#, esc(key));
        match value {
            CimValue::Reference(_) => out.push_str(&scalar_value(value, namespace)),
            other => {
                let _ = write!(
                    out,
                    r#"<KEYVALUE VALUETYPE="{}">{}</KEYVALUE>"#,
                    other.value_type(),
                    esc(&other.text().unwrap_or_default())
                );
            }
        }
        out.push_str("</KEYBINDING>");
    }
    out.push_str("</INSTANCENAME>");
    out
}

/// `CLASSNAME`.
pub fn class_name(name: &str) -> String {
    format!(r#"<CLASSNAME NAME="{}"/>"#, esc(name))
}

/// Which parts of a class or instance to send.
#[derive(Clone, Debug, Default)]
pub struct Shape<'a> {
    /// Only members the class itself declares (classes; LocalOnly).
    pub local_only: bool,
    /// Qualifiers of classes and members.
    pub include_qualifiers: bool,
    /// `CLASSORIGIN` and `PROPAGATED` attributes.
    pub include_class_origin: bool,
    /// Only these properties (any case); all when `None`.
    pub property_list: Option<&'a [String]>,
}

impl Shape<'_> {
    fn wants(&self, property: &str) -> bool {
        self.property_list
            .is_none_or(|list| list.iter().any(|p| p.eq_ignore_ascii_case(property)))
    }
}

fn qualifier(name: &str, value: &str, cim_type: &str) -> String {
    format!(
        r#"<QUALIFIER NAME="{name}" TYPE="{cim_type}"><VALUE>{}</VALUE></QUALIFIER>"#,
        esc(value)
    )
}

fn description(text: Option<&str>) -> String {
    text.map(|d| qualifier("Description", d, "string"))
        .unwrap_or_default()
}

/// `VALUE` or `VALUE.ARRAY` of a literal.
fn literal_value(value: &Literal) -> String {
    match value {
        Literal::Array(items) => {
            let mut out = String::from("<VALUE.ARRAY>");
            for item in items {
                out.push_str(&literal_value(item));
            }
            out.push_str("</VALUE.ARRAY>");
            out
        }
        scalar => format!(
            "<VALUE>{}</VALUE>",
            esc(&scalar.value_text().unwrap_or_default())
        ),
    }
}

/// The `QUALIFIER` elements of `qualifiers`.
fn others(qualifiers: &[Qualifier]) -> String {
    qualifiers
        .iter()
        .map(|q| {
            format!(
                r#"<QUALIFIER NAME="{}" TYPE="{}">{}</QUALIFIER>"#,
                esc(&q.name),
                q.cim_type,
                literal_value(&q.value)
            )
        })
        .collect()
}

/// A property's start tag and the name of its end tag.
fn property_open(p: &Property, class: &str, shape: &Shape) -> (String, &'static str) {
    let origin = if shape.include_class_origin {
        format!(
            r#" CLASSORIGIN="{}" PROPAGATED="{}""#,
            esc(&p.class_origin),
            if p.class_origin.eq_ignore_ascii_case(class) {
                "false"
            } else {
                "true"
            }
        )
    } else {
        String::new()
    };
    let name = esc(&p.name);
    match (&p.cim_type, p.array) {
        (CimType::Reference(target), _) => (
            format!(
                r#"<PROPERTY.REFERENCE NAME="{name}" REFERENCECLASS="{}"{origin}>"#,
                esc(target)
            ),
            "PROPERTY.REFERENCE",
        ),
        (t, true) => (
            format!(
                r#"<PROPERTY.ARRAY NAME="{name}" TYPE="{}"{origin}>"#,
                t.cim_name()
            ),
            "PROPERTY.ARRAY",
        ),
        (t, false) => (
            format!(
                r#"<PROPERTY NAME="{name}" TYPE="{}"{origin}>"#,
                t.cim_name()
            ),
            "PROPERTY",
        ),
    }
}

/// `CLASS`, as `shape` says.
pub fn class(repo: &Repository, class: &Class, shape: &Shape) -> String {
    let mut out = format!(r#"<CLASS NAME="{}""#, esc(&class.name));
    if let Some(sup) = &class.superclass {
        let _ = write!(out, r#" SUPERCLASS="{}""#, esc(sup));
    }
    out.push('>');
    if shape.include_qualifiers {
        if class.association {
            out.push_str(&qualifier("Association", "TRUE", "boolean"));
        }
        if class.is_abstract {
            out.push_str(&qualifier("Abstract", "TRUE", "boolean"));
        }
        out.push_str(&description(class.description.as_deref()));
        out.push_str(&others(&class.qualifiers));
    }
    for p in repo.properties(&class.name) {
        let local = p.class_origin.eq_ignore_ascii_case(&class.name);
        if (shape.local_only && !local) || !shape.wants(&p.name) {
            continue;
        }
        let (open, close) = property_open(p, &class.name, shape);
        out.push_str(&open);
        if shape.include_qualifiers {
            if p.key {
                out.push_str(&qualifier("Key", "TRUE", "boolean"));
            }
            out.push_str(&description(p.description.as_deref()));
            out.push_str(&others(&p.qualifiers));
        }
        if let Some(default) = &p.default {
            out.push_str(&literal_value(default));
        }
        let _ = write!(out, "</{close}>");
    }
    for m in repo.methods(&class.name) {
        let origin = method_origin(repo, &class.name, &m.name);
        if shape.local_only && !origin.eq_ignore_ascii_case(&class.name) {
            continue;
        }
        let _ = write!(
            out,
            r#"<METHOD NAME="{}" TYPE="{}""#,
            esc(&m.name),
            m.return_type.cim_name()
        );
        if shape.include_class_origin {
            let propagated = !origin.eq_ignore_ascii_case(&class.name);
            let _ = write!(
                out,
                r#" CLASSORIGIN="{}" PROPAGATED="{propagated}""#,
                esc(origin)
            );
        }
        out.push('>');
        if shape.include_qualifiers {
            out.push_str(&description(m.description.as_deref()));
            out.push_str(&others(&m.qualifiers));
        }
        for p in &m.parameters {
            out.push_str(&parameter(p, shape.include_qualifiers));
        }
        out.push_str("</METHOD>");
    }
    out.push_str("</CLASS>");
    out
}

/// The class that first declares method `method` in `class`'s lineage.
fn method_origin<'a>(repo: &'a Repository, class: &'a str, method: &str) -> &'a str {
    repo.lineage(class)
        .into_iter()
        .rev()
        .find(|c| {
            c.methods
                .iter()
                .any(|m| m.name.eq_ignore_ascii_case(method))
        })
        .map_or(class, |c| c.name.as_str())
}

fn parameter(p: &Parameter, qualifiers: bool) -> String {
    let name = esc(&p.name);
    let (open, close) = match (&p.cim_type, p.array) {
        (CimType::Reference(target), _) => (
            format!(
                r#"<PARAMETER.REFERENCE NAME="{name}" REFERENCECLASS="{}">"#,
                esc(target)
            ),
            "PARAMETER.REFERENCE",
        ),
        (t, true) => (
            format!(r#"<PARAMETER.ARRAY NAME="{name}" TYPE="{}">"#, t.cim_name()),
            "PARAMETER.ARRAY",
        ),
        (t, false) => (
            format!(r#"<PARAMETER NAME="{name}" TYPE="{}">"#, t.cim_name()),
            "PARAMETER",
        ),
    };
    let mut out = open;
    if qualifiers {
        if p.input {
            out.push_str(&qualifier("In", "TRUE", "boolean"));
        }
        if p.output {
            out.push_str(&qualifier("Out", "TRUE", "boolean"));
        }
        out.push_str(&others(&p.qualifiers));
    }
    let _ = write!(out, "</{close}>");
    out
}

/// `INSTANCE`: every property of its class (null when the instance has no
/// value), as `shape` says; values the class does not declare are left out.
pub fn instance(repo: &Repository, inst: &Instance, namespace: &str, shape: &Shape) -> String {
    let mut out = format!(r#"<INSTANCE CLASSNAME="{}">"#, esc(&inst.class));
    for p in repo.properties(&inst.class) {
        if !shape.wants(&p.name) {
            continue;
        }
        let (open, close) = property_open(p, &inst.class, shape);
        out.push_str(&open);
        if let Some(value) = inst.get(&p.name) {
            out.push_str(&any_value(value, namespace));
        }
        let _ = write!(out, "</{close}>");
    }
    out.push_str("</INSTANCE>");
    out
}

/// `VALUE.NAMEDINSTANCE`: the instance's name and the instance.
pub fn named_instance(
    repo: &Repository,
    inst: &Instance,
    namespace: &str,
    shape: &Shape,
) -> String {
    format!(
        "<VALUE.NAMEDINSTANCE>{}{}</VALUE.NAMEDINSTANCE>",
        instance_name(&inst.path(repo), namespace),
        instance(repo, inst, namespace, shape)
    )
}

/// `VALUE.OBJECTWITHPATH`: the instance's full path and the instance.
pub fn object_with_path(
    repo: &Repository,
    inst: &Instance,
    namespace: &str,
    shape: &Shape,
) -> String {
    format!(
        "<VALUE.OBJECTWITHPATH>{}{}</VALUE.OBJECTWITHPATH>",
        instance_path(&inst.path(repo), namespace),
        instance(repo, inst, namespace, shape)
    )
}

/// `OBJECTPATH` of an instance.
pub fn object_path(name: &InstanceName, namespace: &str) -> String {
    format!(
        "<OBJECTPATH>{}</OBJECTPATH>",
        instance_path(name, namespace)
    )
}

/// `CLASSPATH`: host, namespace, class name.
pub fn class_path(name: &str, namespace: &str) -> String {
    format!(
        "<CLASSPATH><NAMESPACEPATH><HOST>{HOST}</HOST>{}</NAMESPACEPATH>{}</CLASSPATH>",
        local_namespace_path(namespace),
        class_name(name)
    )
}

/// `OBJECTPATH` of a class (class-level AssociatorNames, ReferenceNames).
pub fn class_object_path(name: &str, namespace: &str) -> String {
    format!("<OBJECTPATH>{}</OBJECTPATH>", class_path(name, namespace))
}

/// `VALUE.OBJECTWITHPATH`: a class's path and the class (class-level
/// Associators, References).
pub fn class_with_path(repo: &Repository, class: &Class, namespace: &str, shape: &Shape) -> String {
    format!(
        "<VALUE.OBJECTWITHPATH>{}{}</VALUE.OBJECTWITHPATH>",
        class_path(&class.name, namespace),
        self::class(repo, class, shape)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::CimStatus;
    use crate::xml::parse_document;

    const NS: &str = "root/virtualization/v2";

    fn repo() -> Repository {
        Repository::builtin().unwrap()
    }

    fn service() -> Instance {
        Instance {
            class: "Msvm_GuestCommunicationService".into(),
            properties: vec![
                ("Name".into(), CimValue::String("0000-<&>".into())),
                ("SystemName".into(), CimValue::String("vm".into())),
                (
                    "CreationClassName".into(),
                    CimValue::String("Msvm_GuestCommunicationService".into()),
                ),
                (
                    "SystemCreationClassName".into(),
                    CimValue::String("Msvm_ComputerSystem".into()),
                ),
                ("EnabledState".into(), CimValue::Uint(2)),
                ("Started".into(), CimValue::Boolean(true)),
                ("guestcomm_vm_name".into(), CimValue::String("web1".into())),
            ],
        }
    }

    #[test]
    fn an_enumeration_answer_is_well_formed_and_escaped() {
        let r = repo();
        let body = named_instance(&r, &service(), NS, &Shape::default());
        let xml = imethod_response("7", "EnumerateInstances", Ok(&body));
        let root = parse_document(xml.as_bytes()).unwrap();
        let message = root.child("MESSAGE").unwrap();
        assert_eq!(message.attr("ID"), Some("7"));
        let rv = message
            .child("SIMPLERSP")
            .and_then(|s| s.child("IMETHODRESPONSE"))
            .and_then(|m| m.child("IRETURNVALUE"))
            .unwrap();
        let named = rv.child("VALUE.NAMEDINSTANCE").unwrap();
        let name =
            crate::xml::request::instance_name(named.child("INSTANCENAME").unwrap()).unwrap();
        assert_eq!(name.key_text("Name"), Some("0000-<&>"));
        assert_eq!(name.keys.len(), 4);
        let inst = named.child("INSTANCE").unwrap();
        let prop = |n: &str| inst.children.iter().find(|p| p.attr("NAME") == Some(n));
        assert_eq!(
            prop("EnabledState").unwrap().child("VALUE").unwrap().text,
            "2"
        );
        assert_eq!(
            prop("Started").unwrap().child("VALUE").unwrap().text,
            "TRUE"
        );
        assert!(prop("Caption").unwrap().children.is_empty(), "null");
        assert!(prop("guestcomm_vm_name").is_none(), "not a CIM property");
    }

    #[test]
    fn property_lists_and_class_origin_shape_instances_and_classes() {
        let r = repo();
        let list = vec!["name".to_string()];
        let shape = Shape {
            property_list: Some(&list),
            include_class_origin: true,
            ..Shape::default()
        };
        let xml = instance(&r, &service(), NS, &shape);
        assert_eq!(xml.matches("<PROPERTY ").count(), 1, "{xml}");
        assert!(
            xml.contains(r#"CLASSORIGIN="CIM_Service" PROPAGATED="true""#),
            "{xml}"
        );
        let class = r.class("Msvm_GuestFileService").unwrap();
        let full = super::class(
            &r,
            class,
            &Shape {
                include_qualifiers: true,
                ..Shape::default()
            },
        );
        assert!(full.contains(r#"SUPERCLASS="Msvm_GuestService""#));
        assert!(
            full.contains(r#"<PARAMETER.ARRAY NAME="CopyFileToGuestSettings" TYPE="string">"#),
            "{full}"
        );
        assert!(
            full.contains(r#"<PARAMETER.REFERENCE NAME="Job" REFERENCECLASS="CIM_ConcreteJob">"#)
        );
        assert!(full.contains(r#"<QUALIFIER NAME="Key" TYPE="boolean">"#));
        assert!(
            full.contains(r#"<QUALIFIER NAME="EmbeddedInstance" TYPE="string"><VALUE>Msvm_CopyFileToGuestSettingData</VALUE></QUALIFIER>"#),
            "{full}"
        );
        assert!(
            full.contains(r#"<QUALIFIER NAME="ValueMap" TYPE="string"><VALUE.ARRAY><VALUE>0</VALUE><VALUE>4096</VALUE>"#),
            "{full}"
        );
        assert!(
            full.contains(
                r#"<QUALIFIER NAME="Override" TYPE="string"><VALUE>Name</VALUE></QUALIFIER>"#
            ),
            "{full}"
        );
        assert!(
            full.contains(
                r#"<PROPERTY NAME="RequestedState" TYPE="uint16"><QUALIFIER NAME="ValueMap""#
            ),
            "{full}"
        );
        assert!(full.contains("<VALUE>12</VALUE></PROPERTY>"), "{full}");
        let bare = super::class(&r, class, &Shape::default());
        assert!(!bare.contains("<QUALIFIER"), "{bare}");
        let local = super::class(
            &r,
            class,
            &Shape {
                local_only: true,
                ..Shape::default()
            },
        );
        assert!(!local.contains("<PROPERTY"), "{local}");
        assert_eq!(local.matches("<METHOD ").count(), 1, "{local}");
        assert!(parse_document(full.as_bytes()).is_ok());
    }

    #[test]
    fn method_answers_carry_the_return_value_and_a_job_reference() {
        let job = InstanceName::new(
            "Msvm_CopyFileToGuestJob",
            vec![("InstanceID".into(), CimValue::String("j1".into()))],
        );
        let ret = MethodReturn {
            value: CimValue::Uint(4096),
            value_type: CimType::Uint(32),
            outputs: vec![(
                "Job".into(),
                CimValue::Reference(job),
                CimType::Reference("CIM_ConcreteJob".into()),
            )],
        };
        let xml = method_response("1", "CopyFilesToGuest", NS, Ok(&ret));
        assert!(
            xml.contains(r#"<RETURNVALUE PARAMTYPE="uint32"><VALUE>4096</VALUE></RETURNVALUE>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<PARAMVALUE NAME="Job" PARAMTYPE="reference"><VALUE.REFERENCE><LOCALINSTANCEPATH>"#), "{xml}");
        let err = CimError::new(CimStatus::InvalidParameter, "a \"bad\" <one>");
        let xml = method_response("1", "X", NS, Err(&err));
        assert!(
            xml.contains(r#"<ERROR CODE="4" DESCRIPTION="a &quot;bad&quot; &lt;one&gt;"/>"#),
            "{xml}"
        );
        assert!(parse_document(xml.as_bytes()).is_ok());
    }
}
