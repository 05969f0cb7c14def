//! The client side of CIM-XML, for `guestcomm cim`: encoding requests
//! (intrinsic operations and methods) and decoding answers into objects,
//! method results or the server's error. Answers are bounded by
//! [`Limits::RESPONSE`] and parsed by the same hardened reader as requests.

use super::request::{instance, path, ParamValue};
use super::response::{esc, instance_name as encode_name, local_namespace_path};
use super::{parse_with, Element, Limits, XmlError};
use crate::status::{CimError, CimStatus};
use crate::value::{CimValue, Instance, InstanceName};
use crate::CimType;

/// A parameter a client sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// `VALUE`.
    Value(String),
    /// `VALUE.ARRAY`.
    Array(Vec<String>),
    /// `CLASSNAME`.
    ClassName(String),
    /// `INSTANCENAME`.
    InstanceName(InstanceName),
    /// Instances embedded as CIM-XML text (`EmbeddedObject="instance"`).
    Embedded(Vec<String>),
}

fn envelope(id: u32, call: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="{id}" PROTOCOLVERSION="1.0"><SIMPLEREQ>{call}</SIMPLEREQ></MESSAGE></CIM>"#
    )
}

fn arg(tag: &str, name: &str, value: &Arg, namespace: &str) -> String {
    let extra = match value {
        Arg::Embedded(_) => r#" PARAMTYPE="string" EmbeddedObject="instance""#,
        _ => "",
    };
    let inner = match value {
        Arg::Value(v) => format!("<VALUE>{}</VALUE>", esc(v)),
        Arg::Array(items) | Arg::Embedded(items) => {
            let values: String = items
                .iter()
                .map(|v| format!("<VALUE>{}</VALUE>", esc(v)))
                .collect();
            format!("<VALUE.ARRAY>{values}</VALUE.ARRAY>")
        }
        Arg::ClassName(c) => format!(r#"<CLASSNAME NAME="{}"/>"#, esc(c)),
        Arg::InstanceName(n) => encode_name(n, namespace),
    };
    format!(r#"<{tag} NAME="{}"{extra}>{inner}</{tag}>"#, esc(name))
}

/// An intrinsic operation (`IMETHODCALL`) in `namespace`.
pub fn intrinsic_request(id: u32, name: &str, namespace: &str, args: &[(&str, Arg)]) -> String {
    let params: String = args
        .iter()
        .map(|(n, v)| arg("IPARAMVALUE", n, v, namespace))
        .collect();
    envelope(
        id,
        &format!(
            r#"<IMETHODCALL NAME="{}">{}{params}</IMETHODCALL>"#,
            esc(name),
            local_namespace_path(namespace)
        ),
    )
}

/// Method `name` of the instance `target` (`METHODCALL`).
pub fn method_request(
    id: u32,
    name: &str,
    namespace: &str,
    target: &InstanceName,
    args: &[(String, Arg)],
) -> String {
    let params: String = args
        .iter()
        .map(|(n, v)| arg("PARAMVALUE", n, v, namespace))
        .collect();
    envelope(
        id,
        &format!(
            r#"<METHODCALL NAME="{}"><LOCALINSTANCEPATH>{}{}</LOCALINSTANCEPATH>{params}</METHODCALL>"#,
            esc(name),
            local_namespace_path(namespace),
            encode_name(target, namespace)
        ),
    )
}

/// One object of an intrinsic operation's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// An instance, with its name when the answer gave it.
    Instance(Option<InstanceName>, Instance),
    /// An instance name (`INSTANCENAME`, `OBJECTPATH`).
    Name(InstanceName),
    /// A class name.
    ClassName(String),
    /// A class (its name).
    Class(String),
}

/// A decoded answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The objects of an intrinsic operation.
    Objects(Vec<Object>),
    /// A method's return value and output parameters.
    Return(CimValue, Vec<(String, CimValue)>),
}

/// Decodes an answer: the operation's result, or the error it ended with.
pub fn parse_response(body: &[u8]) -> Result<Result<Answer, CimError>, XmlError> {
    let root = parse_with(body, Limits::RESPONSE)?;
    let rsp = root
        .child("MESSAGE")
        .and_then(|m| m.child("SIMPLERSP"))
        .ok_or_else(|| XmlError::Invalid("the answer has no CIM/MESSAGE/SIMPLERSP".into()))?;
    let answer = rsp.only_child("IMETHODRESPONSE or METHODRESPONSE")?;
    if let Some(e) = answer.child("ERROR") {
        let code: u16 = e.required("CODE")?.parse().unwrap_or(1);
        let text = e.attr("DESCRIPTION").unwrap_or_default();
        let err = match CimStatus::from_code(code) {
            Some(status) => CimError::new(status, text),
            None => CimError::new(CimStatus::Failed, format!("CIM status {code}: {text}")),
        };
        return Ok(Err(err));
    }
    match answer.name.as_str() {
        "IMETHODRESPONSE" => {
            let objects = match answer.child("IRETURNVALUE") {
                Some(rv) => rv.children.iter().map(object).collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            Ok(Ok(Answer::Objects(objects)))
        }
        "METHODRESPONSE" => {
            let returned = match answer.child("RETURNVALUE") {
                Some(rv) => value(rv)?,
                None => CimValue::Null,
            };
            let outputs = answer
                .children
                .iter()
                .filter(|c| c.name == "PARAMVALUE")
                .map(|p| Ok((p.required("NAME")?.to_string(), value(p)?)))
                .collect::<Result<_, XmlError>>()?;
            Ok(Ok(Answer::Return(returned, outputs)))
        }
        other => Err(XmlError::Invalid(format!("{other} is not an answer"))),
    }
}

fn name_of(e: &Element) -> Result<InstanceName, XmlError> {
    match path(e)? {
        ParamValue::InstanceName(n) => Ok(n),
        _ => Err(XmlError::Invalid(format!(
            "{} does not name an instance",
            e.name
        ))),
    }
}

fn object(e: &Element) -> Result<Object, XmlError> {
    let find = |name: &str| {
        e.child(name)
            .ok_or_else(|| XmlError::Invalid(format!("{} has no {name}", e.name)))
    };
    Ok(match e.name.as_str() {
        "VALUE.NAMEDINSTANCE" => Object::Instance(
            Some(name_of(find("INSTANCENAME")?)?),
            instance(find("INSTANCE")?)?,
        ),
        "VALUE.OBJECTWITHPATH" => Object::Instance(
            Some(name_of(find("INSTANCEPATH")?)?),
            instance(find("INSTANCE")?)?,
        ),
        "INSTANCE" => Object::Instance(None, instance(e)?),
        "INSTANCENAME" => Object::Name(name_of(e)?),
        "OBJECTPATH" => Object::Name(name_of(e.only_child("INSTANCEPATH")?)?),
        "CLASSNAME" => Object::ClassName(e.required("NAME")?.to_string()),
        "CLASS" => Object::Class(e.required("NAME")?.to_string()),
        other => {
            return Err(XmlError::Invalid(format!(
                "unexpected {other} in an answer"
            )))
        }
    })
}

/// The value inside a `RETURNVALUE` or `PARAMVALUE`, typed by `PARAMTYPE`.
fn value(e: &Element) -> Result<CimValue, XmlError> {
    let t = e
        .attr("PARAMTYPE")
        .and_then(CimType::from_mof)
        .unwrap_or(CimType::String);
    let Some(v) = e.children.first() else {
        return Ok(CimValue::Null);
    };
    Ok(match v.name.as_str() {
        "VALUE" => CimValue::parse(&v.text, &t).map_err(XmlError::Invalid)?,
        "VALUE.REFERENCE" => CimValue::Reference(name_of(v.only_child("path")?)?),
        "VALUE.ARRAY" => CimValue::Array(
            v.children
                .iter()
                .filter(|x| x.name == "VALUE")
                .map(|x| CimValue::parse(&x.text, &t).map_err(XmlError::Invalid))
                .collect::<Result<_, _>>()?,
        ),
        "VALUE.REFARRAY" => CimValue::Array(
            v.children
                .iter()
                .filter(|x| x.name == "VALUE.REFERENCE")
                .map(|x| Ok(CimValue::Reference(name_of(x.only_child("path")?)?)))
                .collect::<Result<_, XmlError>>()?,
        ),
        _ => CimValue::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::request::{parse_request, CallKind};
    use crate::xml::response::{self, MethodReturn, Shape};
    use crate::Repository;

    const NS: &str = "root/virtualization/v2";

    #[test]
    fn requests_made_here_decode_as_the_server_reads_them() {
        let target = InstanceName::new("A", vec![("Name".into(), CimValue::String("x&y".into()))]);
        let body = method_request(
            3,
            "CopyFilesToGuest",
            NS,
            &target,
            &[(
                "CopyFileToGuestSettings".into(),
                Arg::Embedded(vec!["<INSTANCE CLASSNAME=\"S\"/>".into()]),
            )],
        );
        let req = parse_request(body.as_bytes()).unwrap();
        assert_eq!(req.call.kind, CallKind::InstanceMethod(target));
        let p = req.call.param("CopyFileToGuestSettings").unwrap();
        assert!(p.embedded);
        let body = intrinsic_request(
            4,
            "EnumerateInstances",
            NS,
            &[
                ("ClassName", Arg::ClassName("Msvm_ComputerSystem".into())),
                ("PropertyList", Arg::Array(vec!["Name".into()])),
            ],
        );
        let req = parse_request(body.as_bytes()).unwrap();
        assert_eq!(req.call.namespace, NS);
        assert_eq!(
            req.call.param("ClassName").unwrap().value,
            ParamValue::ClassName("Msvm_ComputerSystem".into())
        );
    }

    #[test]
    fn answers_made_by_the_server_decode_into_objects_results_and_errors() {
        let repo = Repository::builtin().unwrap();
        let inst = Instance {
            class: "Msvm_ComputerSystem".into(),
            properties: vec![
                (
                    "CreationClassName".into(),
                    CimValue::String("Msvm_ComputerSystem".into()),
                ),
                ("Name".into(), CimValue::String("id".into())),
                ("EnabledState".into(), CimValue::Uint(2)),
            ],
        };
        let objects = response::named_instance(&repo, &inst, NS, &Shape::default())
            + &response::object_with_path(&repo, &inst, NS, &Shape::default())
            + &response::object_path(&inst.path(&repo), NS)
            + &response::class_name("X");
        let xml = response::imethod_response("1", "EnumerateInstances", Ok(&objects));
        let Ok(Ok(Answer::Objects(found))) = parse_response(xml.as_bytes()) else {
            panic!("{xml}")
        };
        assert_eq!(found.len(), 4);
        let Object::Instance(Some(path), got) = &found[1] else {
            panic!("{found:?}")
        };
        assert!(path.same(&inst.path(&repo)));
        assert_eq!(got.get("EnabledState"), Some(&CimValue::Uint(2)));
        assert!(matches!(&found[2], Object::Name(n) if n.same(&inst.path(&repo))));
        assert_eq!(found[3], Object::ClassName("X".into()));

        let ret = MethodReturn {
            value: CimValue::Uint(4096),
            value_type: CimType::Uint(32),
            outputs: vec![
                (
                    "Job".into(),
                    CimValue::Reference(inst.path(&repo)),
                    CimType::Reference("CIM_ConcreteJob".into()),
                ),
                (
                    "Resulting".into(),
                    CimValue::Array(vec![CimValue::Reference(inst.path(&repo)); 2]),
                    CimType::Reference("CIM_SettingData".into()),
                ),
            ],
        };
        let xml = response::method_response("1", "M", NS, Ok(&ret));
        assert!(xml.contains("<VALUE.REFARRAY>"), "{xml}");
        let Ok(Ok(Answer::Return(v, outputs))) = parse_response(xml.as_bytes()) else {
            panic!("{xml}")
        };
        assert_eq!(v, CimValue::Uint(4096));
        assert!(
            matches!(&outputs[0].1, CimValue::Reference(n) if n.class == "Msvm_ComputerSystem")
        );
        assert!(
            matches!(&outputs[1].1, CimValue::Array(refs) if refs.len() == 2
                && refs.iter().all(|r| matches!(r, CimValue::Reference(n) if n.class == "Msvm_ComputerSystem"))),
            "{outputs:?}"
        );

        let err = CimError::new(CimStatus::InvalidClass, "no class Nope");
        let xml = response::imethod_response("1", "GetClass", Err(&err));
        assert_eq!(parse_response(xml.as_bytes()), Ok(Err(err)));
        assert!(parse_response(b"<CIM/>").is_err());
    }
}
