//! Decoding a CIM-XML request: `CIM/MESSAGE/SIMPLEREQ` holding one
//! `IMETHODCALL` (an intrinsic operation on a namespace) or `METHODCALL`
//! (a method of a class or instance), with their parameters; and the
//! instances embedded as escaped CIM-XML in string parameters
//! (`EmbeddedObject="instance"`, as pywbem and WMI's `GetText` send them).

use super::{parse_document, Element, XmlError};
use crate::value::{CimValue, Instance, InstanceName};
use crate::CimType;

/// A decoded request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The `MESSAGE ID`, echoed in the response.
    pub id: String,
    /// The operation.
    pub call: Call,
}

/// What a request asks.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Intrinsic (`IMETHODCALL`) or a method (`METHODCALL`) and its target.
    pub kind: CallKind,
    /// The operation or method name.
    pub name: String,
    /// The namespace, `root/virtualization/v2`.
    pub namespace: String,
    /// Its parameters (`IPARAMVALUE` or `PARAMVALUE`), in order.
    pub params: Vec<Param>,
}

/// Intrinsic operation or extrinsic method.
#[derive(Clone, Debug, PartialEq)]
pub enum CallKind {
    /// `IMETHODCALL`: GetClass, EnumerateInstances, ...
    Intrinsic,
    /// `METHODCALL` on a class.
    ClassMethod(String),
    /// `METHODCALL` on an instance.
    InstanceMethod(InstanceName),
}

/// One parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: ParamValue,
    /// `PARAMTYPE`, when given.
    pub param_type: Option<String>,
    /// `EmbeddedObject="instance"` (or `"object"`): the string values are
    /// escaped CIM-XML instances ([`parse_embedded_instance`]).
    pub embedded: bool,
}

/// A parameter's value, as the request holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    /// No value.
    Null,
    /// `VALUE`: text, typed by the receiver.
    Value(String),
    /// `VALUE.ARRAY`: texts (`VALUE.NULL` as `None`).
    Array(Vec<Option<String>>),
    /// `CLASSNAME`.
    ClassName(String),
    /// `INSTANCENAME`, or a `VALUE.REFERENCE` to an instance.
    InstanceName(InstanceName),
    /// A `VALUE.REFERENCE` to a class.
    ClassReference(String),
    /// `VALUE.REFARRAY`: references to instances (`VALUE.NULL` as `None`).
    References(Vec<Option<InstanceName>>),
    /// A value this server does not take (e.g. the `INSTANCE` of
    /// CreateInstance), by its element name: decoded, so that the operation
    /// can be answered with a CIM error rather than refused as invalid XML.
    Unsupported(String),
}

impl Call {
    /// The parameter `name` (any case).
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// Decodes a request body.
pub fn parse_request(body: &[u8]) -> Result<Request, XmlError> {
    let root = parse_document(body)?;
    if root.name != "CIM" {
        return Err(XmlError::Invalid(format!(
            "the root element is {}, not CIM",
            root.name
        )));
    }
    let message = root.only_child("MESSAGE")?;
    if message.name != "MESSAGE" {
        return Err(invalid("CIM must hold a MESSAGE"));
    }
    let id = message.required("ID")?.to_string();
    let simple = message.only_child("SIMPLEREQ")?;
    if simple.name != "SIMPLEREQ" {
        return Err(XmlError::Invalid(format!(
            "{} is not supported: send one SIMPLEREQ per message",
            simple.name
        )));
    }
    let call = simple.only_child("IMETHODCALL or METHODCALL")?;
    let name = call.required("NAME")?.to_string();
    let (kind, namespace, params) = match call.name.as_str() {
        "IMETHODCALL" => {
            let ns = call
                .child("LOCALNAMESPACEPATH")
                .ok_or_else(|| invalid("IMETHODCALL has no LOCALNAMESPACEPATH"))?;
            let params: Vec<&Element> = call
                .children
                .iter()
                .filter(|c| c.name == "IPARAMVALUE")
                .collect();
            (CallKind::Intrinsic, namespace(ns)?, params)
        }
        "METHODCALL" => {
            let (kind, ns) = if let Some(path) = call.child("LOCALINSTANCEPATH") {
                let ns = path
                    .child("LOCALNAMESPACEPATH")
                    .ok_or_else(|| invalid("LOCALINSTANCEPATH has no LOCALNAMESPACEPATH"))?;
                let name = path
                    .child("INSTANCENAME")
                    .ok_or_else(|| invalid("LOCALINSTANCEPATH has no INSTANCENAME"))?;
                (CallKind::InstanceMethod(instance_name(name)?), ns)
            } else if let Some(path) = call.child("LOCALCLASSPATH") {
                let ns = path
                    .child("LOCALNAMESPACEPATH")
                    .ok_or_else(|| invalid("LOCALCLASSPATH has no LOCALNAMESPACEPATH"))?;
                let class = path
                    .child("CLASSNAME")
                    .ok_or_else(|| invalid("LOCALCLASSPATH has no CLASSNAME"))?;
                (
                    CallKind::ClassMethod(class.required("NAME")?.to_string()),
                    ns,
                )
            } else {
                return Err(invalid(
                    "METHODCALL has neither LOCALINSTANCEPATH nor LOCALCLASSPATH",
                ));
            };
            let params: Vec<&Element> = call
                .children
                .iter()
                .filter(|c| c.name == "PARAMVALUE")
                .collect();
            (kind, namespace(ns)?, params)
        }
        other => {
            return Err(XmlError::Invalid(format!(
                "{other} is not a request (IMETHODCALL or METHODCALL)"
            )))
        }
    };
    let params = params.into_iter().map(param).collect::<Result<_, _>>()?;
    Ok(Request {
        id,
        call: Call {
            kind,
            name,
            namespace,
            params,
        },
    })
}

fn invalid(what: &str) -> XmlError {
    XmlError::Invalid(what.to_string())
}

/// `LOCALNAMESPACEPATH`: its `NAMESPACE` names joined by `/`.
fn namespace(path: &Element) -> Result<String, XmlError> {
    let parts = path
        .children
        .iter()
        .filter(|c| c.name == "NAMESPACE")
        .map(|c| c.required("NAME"))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        return Err(invalid("LOCALNAMESPACEPATH names no NAMESPACE"));
    }
    Ok(parts.join("/"))
}

/// An `IPARAMVALUE` or `PARAMVALUE`.
fn param(e: &Element) -> Result<Param, XmlError> {
    let name = e.required("NAME")?.to_string();
    let embedded = e
        .attr("EmbeddedObject")
        .or_else(|| e.attr("EMBEDDEDOBJECT"))
        .is_some_and(|v| v.eq_ignore_ascii_case("instance") || v.eq_ignore_ascii_case("object"));
    let value = match e.children.as_slice() {
        [] => ParamValue::Null,
        [one] => match one.name.as_str() {
            "VALUE" => ParamValue::Value(one.text.clone()),
            "VALUE.NULL" => ParamValue::Null,
            "VALUE.ARRAY" => ParamValue::Array(
                one.children
                    .iter()
                    .map(|v| match v.name.as_str() {
                        "VALUE" => Ok(Some(v.text.clone())),
                        "VALUE.NULL" => Ok(None),
                        other => Err(XmlError::Invalid(format!(
                            "VALUE.ARRAY holds {other}, not VALUE"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "CLASSNAME" => ParamValue::ClassName(one.required("NAME")?.to_string()),
            "INSTANCENAME" => ParamValue::InstanceName(instance_name(one)?),
            "VALUE.REFERENCE" => reference(one)?,
            "VALUE.REFARRAY" => ParamValue::References(
                one.children
                    .iter()
                    .map(|v| match (v.name.as_str(), reference(v)) {
                        ("VALUE.NULL", _) => Ok(None),
                        ("VALUE.REFERENCE", Ok(ParamValue::InstanceName(n))) => Ok(Some(n)),
                        ("VALUE.REFERENCE", Err(e)) => Err(e),
                        (other, _) => Err(XmlError::Invalid(format!(
                            "VALUE.REFARRAY holds {other}, not a VALUE.REFERENCE to an instance"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => ParamValue::Unsupported(other.to_string()),
        },
        _ => {
            return Err(XmlError::Invalid(format!(
                "parameter {name} holds more than one value"
            )))
        }
    };
    Ok(Param {
        name,
        value,
        param_type: e.attr("PARAMTYPE").map(str::to_string),
        embedded,
    })
}

/// A `VALUE.REFERENCE`: to an instance (`INSTANCENAME`, `LOCALINSTANCEPATH`,
/// `INSTANCEPATH`) or a class (`CLASSNAME`, `LOCALCLASSPATH`, `CLASSPATH`).
fn reference(e: &Element) -> Result<ParamValue, XmlError> {
    path(e.only_child("path")?)
}

/// A path element: `INSTANCENAME`, `LOCALINSTANCEPATH`, `INSTANCEPATH`,
/// `CLASSNAME`, `LOCALCLASSPATH` or `CLASSPATH`.
pub(crate) fn path(path: &Element) -> Result<ParamValue, XmlError> {
    let ns_of = |p: &Element| -> Result<Option<String>, XmlError> {
        let local = match p.child("NAMESPACEPATH") {
            Some(n) => n.child("LOCALNAMESPACEPATH"),
            None => p.child("LOCALNAMESPACEPATH"),
        };
        local.map(namespace).transpose()
    };
    Ok(match path.name.as_str() {
        "INSTANCENAME" => ParamValue::InstanceName(instance_name(path)?),
        "LOCALINSTANCEPATH" | "INSTANCEPATH" => {
            let name = path
                .child("INSTANCENAME")
                .ok_or_else(|| XmlError::Invalid(format!("{} has no INSTANCENAME", path.name)))?;
            let mut name = instance_name(name)?;
            name.namespace = ns_of(path)?;
            ParamValue::InstanceName(name)
        }
        "CLASSNAME" => ParamValue::ClassReference(path.required("NAME")?.to_string()),
        "LOCALCLASSPATH" | "CLASSPATH" => {
            let class = path
                .child("CLASSNAME")
                .ok_or_else(|| XmlError::Invalid(format!("{} has no CLASSNAME", path.name)))?;
            ParamValue::ClassReference(class.required("NAME")?.to_string())
        }
        other => {
            return Err(XmlError::Invalid(format!(
                "VALUE.REFERENCE holds {other}, not a path"
            )))
        }
    })
}

/// An `INSTANCENAME` with its `KEYBINDING`s.
pub fn instance_name(e: &Element) -> Result<InstanceName, XmlError> {
    let class = e.required("CLASSNAME")?.to_string();
    let mut keys = Vec::new();
    for binding in &e.children {
        if binding.name != "KEYBINDING" {
            return Err(XmlError::Invalid(format!(
                "INSTANCENAME holds {}: only KEYBINDING is supported",
                binding.name
            )));
        }
        let name = binding.required("NAME")?.to_string();
        let value = binding.only_child("KEYVALUE or VALUE.REFERENCE")?;
        let value = match value.name.as_str() {
            "KEYVALUE" => key_value(value)?,
            "VALUE.REFERENCE" => match reference(value)? {
                ParamValue::InstanceName(n) => CimValue::Reference(n),
                _ => return Err(invalid("a reference key must name an instance")),
            },
            other => {
                return Err(XmlError::Invalid(format!(
                    "KEYBINDING holds {other}, not KEYVALUE"
                )))
            }
        };
        keys.push((name, value));
    }
    Ok(InstanceName::new(class, keys))
}

/// A `KEYVALUE`, by its `VALUETYPE` (string by default).
fn key_value(e: &Element) -> Result<CimValue, XmlError> {
    let text = e.text.as_str();
    match e.attr("VALUETYPE").unwrap_or("string") {
        // The daemon's keys hold GUIDs in one form; a client may write
        // them in braces or upper case, as WMI allows.
        "string" => Ok(CimValue::String(crate::value::guid_form(text).into_owned())),
        "boolean" => CimValue::parse(text, &CimType::Boolean).map_err(XmlError::Invalid),
        "numeric" => {
            let t = text.trim();
            if let Ok(v) = t.parse::<u64>() {
                Ok(CimValue::Uint(v))
            } else if let Ok(v) = t.parse::<i64>() {
                Ok(CimValue::Sint(v))
            } else {
                t.parse::<f64>()
                    .map(CimValue::Real)
                    .map_err(|_| XmlError::Invalid(format!("key value {t:?} is not numeric")))
            }
        }
        other => Err(XmlError::Invalid(format!("unknown VALUETYPE {other:?}"))),
    }
}

/// Decodes an instance embedded as escaped CIM-XML in a string value: an
/// `INSTANCE` whose `PROPERTY` values are typed by their `TYPE` (string
/// when absent). Same limits as a request.
pub fn parse_embedded_instance(text: &str) -> Result<Instance, XmlError> {
    let root = parse_document(text.trim().as_bytes())?;
    if root.name != "INSTANCE" {
        return Err(XmlError::Invalid(format!(
            "an embedded object must be an INSTANCE, not {}",
            root.name
        )));
    }
    instance(&root)
}

/// An `INSTANCE` element: `PROPERTY` values typed by their `TYPE` (string
/// when absent), `PROPERTY.ARRAY`, `PROPERTY.REFERENCE` to instances.
pub fn instance(e: &Element) -> Result<Instance, XmlError> {
    let class = e.required("CLASSNAME")?.to_string();
    let mut properties = Vec::new();
    for p in &e.children {
        let name = p.required("NAME").map(str::to_string);
        let cim_type = || -> Result<CimType, XmlError> {
            let t = p.attr("TYPE").unwrap_or("string");
            CimType::from_mof(t)
                .ok_or_else(|| XmlError::Invalid(format!("unknown property type {t:?}")))
        };
        let value = match p.name.as_str() {
            "PROPERTY" => match p.child("VALUE") {
                Some(v) => CimValue::parse(&v.text, &cim_type()?).map_err(XmlError::Invalid)?,
                None => CimValue::Null,
            },
            "PROPERTY.ARRAY" => match p.child("VALUE.ARRAY") {
                Some(a) => {
                    let t = cim_type()?;
                    CimValue::Array(
                        a.children
                            .iter()
                            .filter(|v| v.name == "VALUE")
                            .map(|v| CimValue::parse(&v.text, &t).map_err(XmlError::Invalid))
                            .collect::<Result<_, _>>()?,
                    )
                }
                None => CimValue::Null,
            },
            "PROPERTY.REFERENCE" => match p.child("VALUE.REFERENCE") {
                Some(r) => match reference(r)? {
                    ParamValue::InstanceName(n) => CimValue::Reference(n),
                    _ => return Err(invalid("a reference property must name an instance")),
                },
                None => CimValue::Null,
            },
            "QUALIFIER" => continue,
            other => {
                return Err(XmlError::Invalid(format!(
                "an INSTANCE holds {other}: only PROPERTY, PROPERTY.ARRAY and PROPERTY.REFERENCE"
            )))
            }
        };
        properties.push((name?, value));
    }
    Ok(Instance { class, properties })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = r#"<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/><NAMESPACE NAME="v2"/></LOCALNAMESPACEPATH>"#;

    fn wrap(call: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1001" PROTOCOLVERSION="1.0"><SIMPLEREQ>{call}</SIMPLEREQ></MESSAGE></CIM>"#
        )
    }

    #[test]
    fn an_intrinsic_call_with_its_namespace_and_parameters() {
        let body = wrap(&format!(
            r#"<IMETHODCALL NAME="Associators">{NS}<IPARAMVALUE NAME="ObjectName"><INSTANCENAME CLASSNAME="Msvm_GuestCommunicationService"><KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string" TYPE="string">x</KEYVALUE></KEYBINDING><KEYBINDING NAME="N"><KEYVALUE VALUETYPE="numeric">-3</KEYVALUE></KEYBINDING></INSTANCENAME></IPARAMVALUE><IPARAMVALUE NAME="AssocClass"><CLASSNAME NAME="Msvm_RegisteredGuestService"/></IPARAMVALUE><IPARAMVALUE NAME="Role"><VALUE>Dependent</VALUE></IPARAMVALUE><IPARAMVALUE NAME="PropertyList"><VALUE.ARRAY><VALUE>Name</VALUE></VALUE.ARRAY></IPARAMVALUE></IMETHODCALL>"#
        ));
        let req = parse_request(body.as_bytes()).unwrap();
        assert_eq!(req.id, "1001");
        let call = req.call;
        assert_eq!(
            (
                call.kind.clone(),
                call.name.as_str(),
                call.namespace.as_str()
            ),
            (CallKind::Intrinsic, "Associators", "root/virtualization/v2")
        );
        let ParamValue::InstanceName(name) = &call.param("objectname").unwrap().value else {
            panic!("{call:?}")
        };
        assert_eq!(name.key_text("name"), Some("x"));
        assert_eq!(name.key("N"), Some(&CimValue::Sint(-3)));
        assert_eq!(
            call.param("AssocClass").unwrap().value,
            ParamValue::ClassName("Msvm_RegisteredGuestService".into())
        );
        assert_eq!(
            call.param("PropertyList").unwrap().value,
            ParamValue::Array(vec![Some("Name".into())])
        );
    }

    #[test]
    fn a_method_call_with_embedded_instances_as_pywbem_sends_it() {
        let body = wrap(&format!(
            r#"<METHODCALL NAME="CopyFilesToGuest"><LOCALINSTANCEPATH>{NS}<INSTANCENAME CLASSNAME="Msvm_GuestFileService"><KEYBINDING NAME="Name"><KEYVALUE>f</KEYVALUE></KEYBINDING></INSTANCENAME></LOCALINSTANCEPATH><PARAMVALUE NAME="CopyFileToGuestSettings" PARAMTYPE="string" EmbeddedObject="instance"><VALUE.ARRAY><VALUE>&lt;INSTANCE CLASSNAME=&quot;Msvm_CopyFileToGuestSettingData&quot;&gt;&lt;PROPERTY NAME=&quot;SourcePath&quot; TYPE=&quot;string&quot;&gt;&lt;VALUE&gt;/a&amp;amp;b&lt;/VALUE&gt;&lt;/PROPERTY&gt;&lt;PROPERTY NAME=&quot;OverwriteExisting&quot; TYPE=&quot;boolean&quot;&gt;&lt;VALUE&gt;TRUE&lt;/VALUE&gt;&lt;/PROPERTY&gt;&lt;/INSTANCE&gt;</VALUE></VALUE.ARRAY></PARAMVALUE></METHODCALL>"#
        ));
        let req = parse_request(body.as_bytes()).unwrap();
        let CallKind::InstanceMethod(target) = &req.call.kind else {
            panic!("{req:?}")
        };
        assert_eq!(target.class, "Msvm_GuestFileService");
        let param = req.call.param("CopyFileToGuestSettings").unwrap();
        assert!(param.embedded);
        let ParamValue::Array(items) = &param.value else {
            panic!("{param:?}")
        };
        let inst = parse_embedded_instance(items[0].as_deref().unwrap()).unwrap();
        assert_eq!(inst.class, "Msvm_CopyFileToGuestSettingData");
        assert_eq!(
            inst.get("sourcepath"),
            Some(&CimValue::String("/a&b".into()))
        );
        assert_eq!(
            inst.get("OverwriteExisting"),
            Some(&CimValue::Boolean(true))
        );
    }

    #[test]
    fn a_class_method_and_a_reference_parameter() {
        let body = wrap(&format!(
            r#"<METHODCALL NAME="Foo"><LOCALCLASSPATH>{NS}<CLASSNAME NAME="Msvm_GuestService"/></LOCALCLASSPATH><PARAMVALUE NAME="R" PARAMTYPE="reference"><VALUE.REFERENCE><LOCALINSTANCEPATH>{NS}<INSTANCENAME CLASSNAME="A"><KEYBINDING NAME="K"><VALUE.REFERENCE><INSTANCENAME CLASSNAME="B"/></VALUE.REFERENCE></KEYBINDING></INSTANCENAME></LOCALINSTANCEPATH></VALUE.REFERENCE></PARAMVALUE></METHODCALL>"#
        ));
        let req = parse_request(body.as_bytes()).unwrap();
        assert_eq!(
            req.call.kind,
            CallKind::ClassMethod("Msvm_GuestService".into())
        );
        let ParamValue::InstanceName(r) = &req.call.param("r").unwrap().value else {
            panic!("{req:?}")
        };
        assert_eq!(r.namespace.as_deref(), Some("root/virtualization/v2"));
        assert!(matches!(r.key("K"), Some(CimValue::Reference(b)) if b.class == "B"));
    }

    #[test]
    fn a_reference_array_parameter() {
        let reference = |id: &str| {
            format!(
                r#"<VALUE.REFERENCE><LOCALINSTANCEPATH>{NS}<INSTANCENAME CLASSNAME="S"><KEYBINDING NAME="InstanceID"><KEYVALUE>{id}</KEYVALUE></KEYBINDING></INSTANCENAME></LOCALINSTANCEPATH></VALUE.REFERENCE>"#
            )
        };
        let body = wrap(&format!(
            r#"<METHODCALL NAME="Foo"><LOCALCLASSPATH>{NS}<CLASSNAME NAME="C"/></LOCALCLASSPATH><PARAMVALUE NAME="R" PARAMTYPE="reference"><VALUE.REFARRAY>{}<VALUE.NULL/>{}</VALUE.REFARRAY></PARAMVALUE></METHODCALL>"#,
            reference("a"),
            reference("b")
        ));
        let req = parse_request(body.as_bytes()).unwrap();
        let ParamValue::References(items) = &req.call.param("R").unwrap().value else {
            panic!("{req:?}")
        };
        let ids: Vec<Option<&str>> = items
            .iter()
            .map(|n| n.as_ref().and_then(|n| n.key_text("InstanceID")))
            .collect();
        assert_eq!(ids, [Some("a"), None, Some("b")]);
        let class_ref = wrap(&format!(
            r#"<METHODCALL NAME="Foo"><LOCALCLASSPATH>{NS}<CLASSNAME NAME="C"/></LOCALCLASSPATH><PARAMVALUE NAME="R"><VALUE.REFARRAY><VALUE.REFERENCE><CLASSNAME NAME="S"/></VALUE.REFERENCE></VALUE.REFARRAY></PARAMVALUE></METHODCALL>"#
        ));
        let err = parse_request(class_ref.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("VALUE.REFARRAY holds"), "{err}");
    }

    #[test]
    fn requests_that_are_not_cim_xml_are_invalid() {
        for (body, expected) in [
            ("<NOTCIM/>".to_string(), "root element is NOTCIM"),
            ("<CIM/>".into(), "CIM must hold exactly one MESSAGE"),
            (
                r#"<CIM><MESSAGE ID="1"><MULTIREQ/></MESSAGE></CIM>"#.into(),
                "MULTIREQ is not supported",
            ),
            (
                wrap(r#"<IMETHODCALL NAME="GetClass"/>"#),
                "has no LOCALNAMESPACEPATH",
            ),
            (
                wrap(r#"<METHODCALL NAME="M"/>"#),
                "neither LOCALINSTANCEPATH",
            ),
            (
                wrap(r#"<IMETHODCALL>{NS}</IMETHODCALL>"#),
                "IMETHODCALL has no NAME",
            ),
        ] {
            let err = parse_request(body.as_bytes()).unwrap_err();
            assert!(
                matches!(err, XmlError::Invalid(_)) && err.to_string().contains(expected),
                "{body}: {err}"
            );
            assert_eq!(err.cim_error_header(), "request-not-valid");
        }
        let other = wrap(&format!(
            r#"<IMETHODCALL NAME="CreateInstance">{NS}<IPARAMVALUE NAME="NewInstance"><INSTANCE CLASSNAME="A"/></IPARAMVALUE></IMETHODCALL>"#
        ));
        let req = parse_request(other.as_bytes()).unwrap();
        assert_eq!(
            req.call.param("NewInstance").unwrap().value,
            ParamValue::Unsupported("INSTANCE".into())
        );
        assert!(parse_embedded_instance("<CLASS NAME=\"A\"/>").is_err());
        assert!(parse_embedded_instance(
            r#"<INSTANCE CLASSNAME="A"><PROPERTY NAME="b" TYPE="boolean"><VALUE>maybe</VALUE></PROPERTY></INSTANCE>"#
        )
        .is_err());
    }

    proptest::proptest! {
        #[test]
        fn mangled_pywbem_requests_never_panic(
            edits in proptest::collection::vec((0usize..2000, proptest::num::u8::ANY, 0u8..3), 1..8)
        ) {
            let mut body = wrap(&format!(
                r#"<METHODCALL NAME="CopyFilesToGuest"><LOCALINSTANCEPATH>{NS}<INSTANCENAME CLASSNAME="Msvm_GuestFileService"><KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="numeric">5</KEYVALUE></KEYBINDING></INSTANCENAME></LOCALINSTANCEPATH><PARAMVALUE NAME="S" EmbeddedObject="instance"><VALUE.ARRAY><VALUE>&lt;INSTANCE CLASSNAME=&quot;A&quot;&gt;&lt;PROPERTY NAME=&quot;B&quot; TYPE=&quot;uint8&quot;&gt;&lt;VALUE&gt;7&lt;/VALUE&gt;&lt;/PROPERTY&gt;&lt;/INSTANCE&gt;</VALUE></VALUE.ARRAY></PARAMVALUE></METHODCALL>"#
            ))
            .into_bytes();
            for (at, byte, how) in edits {
                let at = at % (body.len() + 1);
                match how {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ if at < body.len() => {
                        body.remove(at);
                    }
                    _ => {}
                }
            }
            if let Ok(req) = parse_request(&body) {
                for p in &req.call.params {
                    if let ParamValue::Array(items) = &p.value {
                        for text in items.iter().flatten() {
                            let _ = parse_embedded_instance(text);
                        }
                    }
                }
            }
        }

        #[test]
        fn arbitrary_requests_never_panic(body in "[<>/A-Z.= \"]{0,300}") {
            let _ = parse_request(body.as_bytes());
            let _ = parse_embedded_instance(&body);
        }
    }
}
