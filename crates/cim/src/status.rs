//! CIM status codes (DMTF DSP0200, the `CODE` of an `ERROR` element), the
//! error a CIM operation ends with (a code and a one-line description), and
//! the return values of the extrinsic methods guestcomm serves.

/// The CIM status codes a guestcomm CIM server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CimStatus {
    /// 1: the operation failed for another reason (the description says why).
    Failed,
    /// 2: the caller may not do this.
    AccessDenied,
    /// 3: no such namespace.
    InvalidNamespace,
    /// 4: a parameter is missing, unknown or of the wrong type.
    InvalidParameter,
    /// 5: no such class.
    InvalidClass,
    /// 6: no such instance.
    NotFound,
    /// 7: the operation is not supported by this server.
    NotSupported,
    /// 14: a query language other than WQL.
    QueryLanguageNotSupported,
    /// 15: the query does not parse or names unknown properties.
    InvalidQuery,
    /// 16: the method exists but cannot run on this object.
    MethodNotAvailable,
    /// 17: no such method.
    MethodNotFound,
}

impl CimStatus {
    /// The numeric code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Failed => 1,
            Self::AccessDenied => 2,
            Self::InvalidNamespace => 3,
            Self::InvalidParameter => 4,
            Self::InvalidClass => 5,
            Self::NotFound => 6,
            Self::NotSupported => 7,
            Self::QueryLanguageNotSupported => 14,
            Self::InvalidQuery => 15,
            Self::MethodNotAvailable => 16,
            Self::MethodNotFound => 17,
        }
    }

    /// The status of a numeric code, if this server knows it.
    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Failed,
            Self::AccessDenied,
            Self::InvalidNamespace,
            Self::InvalidParameter,
            Self::InvalidClass,
            Self::NotFound,
            Self::NotSupported,
            Self::QueryLanguageNotSupported,
            Self::InvalidQuery,
            Self::MethodNotAvailable,
            Self::MethodNotFound,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }

    /// The symbolic name, `CIM_ERR_...`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Failed => "CIM_ERR_FAILED",
            Self::AccessDenied => "CIM_ERR_ACCESS_DENIED",
            Self::InvalidNamespace => "CIM_ERR_INVALID_NAMESPACE",
            Self::InvalidParameter => "CIM_ERR_INVALID_PARAMETER",
            Self::InvalidClass => "CIM_ERR_INVALID_CLASS",
            Self::NotFound => "CIM_ERR_NOT_FOUND",
            Self::NotSupported => "CIM_ERR_NOT_SUPPORTED",
            Self::QueryLanguageNotSupported => "CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED",
            Self::InvalidQuery => "CIM_ERR_INVALID_QUERY",
            Self::MethodNotAvailable => "CIM_ERR_METHOD_NOT_AVAILABLE",
            Self::MethodNotFound => "CIM_ERR_METHOD_NOT_FOUND",
        }
    }
}

/// The return values of the extrinsic methods guestcomm serves, as their
/// `ValueMap` in `classes.mof` lists them: DMTF's below 32768, Hyper-V's
/// (Msvm_*) from 32768 up. The one definition of these numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnValue {
    /// 0: the method ran to completion.
    Completed,
    /// 1: not supported (DMTF's code: starting or stopping a guest
    /// service, a state the Guest Service Interface cannot take).
    NotSupported,
    /// 4096: a job was started (its reference is the `Job` output).
    JobStarted,
    /// 4097: a job's RequestStateChange when the job has already ended.
    InvalidStateTransition,
    /// 4098: RequestStateChange with a TimeoutPeriod other than 0.
    TimeoutNotSupported,
    /// 32768: the operation failed for another reason.
    Failed,
    /// 32769: the caller may not do this, or a host policy refused it.
    AccessDenied,
    /// 32770: Hyper-V's "Not Supported": this host cannot do it.
    Unsupported,
    /// 32773: a parameter is missing or invalid.
    InvalidParameter,
    /// 32774: the system is in use (a limit of calls at once).
    SystemInUse,
    /// 32775: the change cannot succeed in the element's state (or, for
    /// RequestStateChange of a guest service, that state is not supported).
    InvalidState,
    /// 32777: the system is not available (its agent cannot be reached).
    SystemNotAvailable,
}

impl ReturnValue {
    /// The numeric value, a `uint32`.
    pub const fn code(self) -> u32 {
        match self {
            Self::Completed => 0,
            Self::NotSupported => 1,
            Self::JobStarted => 4096,
            Self::InvalidStateTransition => 4097,
            Self::TimeoutNotSupported => 4098,
            Self::Failed => 32768,
            Self::AccessDenied => 32769,
            Self::Unsupported => 32770,
            Self::InvalidParameter => 32773,
            Self::SystemInUse => 32774,
            Self::InvalidState => 32775,
            Self::SystemNotAvailable => 32777,
        }
    }

    /// Whether a method that returned `code` succeeded: it completed, or
    /// started a job.
    pub fn succeeded(code: u64) -> bool {
        [Self::Completed, Self::JobStarted]
            .into_iter()
            .any(|r| u64::from(r.code()) == code)
    }
}

/// A CIM operation's failure: what goes into the `ERROR` element.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", .status.name())]
pub struct CimError {
    /// The status code.
    pub status: CimStatus,
    /// What was wrong, for a person.
    pub description: String,
}

impl CimError {
    /// An error with `status` and `description`.
    pub fn new(status: CimStatus, description: impl Into<String>) -> Self {
        Self {
            status,
            description: description.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dsp0200s() {
        let all = [
            (CimStatus::Failed, 1),
            (CimStatus::AccessDenied, 2),
            (CimStatus::InvalidNamespace, 3),
            (CimStatus::InvalidParameter, 4),
            (CimStatus::InvalidClass, 5),
            (CimStatus::NotFound, 6),
            (CimStatus::NotSupported, 7),
            (CimStatus::QueryLanguageNotSupported, 14),
            (CimStatus::InvalidQuery, 15),
            (CimStatus::MethodNotAvailable, 16),
            (CimStatus::MethodNotFound, 17),
        ];
        for (status, code) in all {
            assert_eq!(status.code(), code, "{}", status.name());
            assert_eq!(CimStatus::from_code(code), Some(status));
        }
        assert_eq!(CimStatus::from_code(8), None);
        let e = CimError::new(CimStatus::NotFound, "no VM web1");
        assert_eq!(e.to_string(), "CIM_ERR_NOT_FOUND: no VM web1");
    }

    #[test]
    fn return_values_are_those_classes_mof_names() {
        let repo = crate::Repository::builtin().unwrap();
        let all = [
            (ReturnValue::Completed, 0, "Completed with No Error"),
            (ReturnValue::NotSupported, 1, "Not Supported"),
            (
                ReturnValue::JobStarted,
                4096,
                "Method Parameters Checked - Job Started",
            ),
            (
                ReturnValue::InvalidStateTransition,
                4097,
                "Invalid State Transition",
            ),
            (
                ReturnValue::TimeoutNotSupported,
                4098,
                "Use of Timeout Parameter Not Supported",
            ),
            (ReturnValue::Failed, 32768, "Failed"),
            (ReturnValue::AccessDenied, 32769, "Access Denied"),
            (ReturnValue::Unsupported, 32770, "Not Supported"),
            (ReturnValue::InvalidParameter, 32773, "Invalid parameter"),
            (ReturnValue::SystemInUse, 32774, "System is in use"),
            (
                ReturnValue::InvalidState,
                32775,
                "Invalid state for this operation",
            ),
            (
                ReturnValue::SystemNotAvailable,
                32777,
                "System is not available",
            ),
        ];
        // Every (ValueMap, Values) pair of every method in the MOF.
        let mut listed = Vec::new();
        for class in repo.classes() {
            for method in &class.methods {
                let find = |name: &str| {
                    method.qualifiers.iter().find_map(|q| match &q.value {
                        crate::Literal::Array(items) if q.name == name => Some(items.clone()),
                        _ => None,
                    })
                };
                if let (Some(map), Some(values)) = (find("ValueMap"), find("Values")) {
                    for (code, text) in map.iter().zip(&values) {
                        listed.push((code.value_text(), text.value_text()));
                    }
                }
            }
        }
        for (value, code, text) in all {
            assert_eq!(value.code(), code);
            assert!(
                listed.contains(&(Some(code.to_string()), Some(text.to_string()))),
                "{code} {text:?} is not in classes.mof"
            );
        }
        assert!(ReturnValue::succeeded(0) && ReturnValue::succeeded(4096));
        assert!(!ReturnValue::succeeded(1) && !ReturnValue::succeeded(32775));
    }
}
