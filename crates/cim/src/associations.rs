//! The associations of a class, read from the class repository: what
//! DSP0200's Associators and References answer when their ObjectName is a
//! class (the associated classes, the association classes).

use crate::{CimType, Class, Repository};

/// One way a class takes part in an association class: through reference
/// `role` (to the class or one of its superclasses), to `result_class`
/// through `result_role`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassLink<'a> {
    /// The association class.
    pub association: &'a Class,
    /// The reference that names the source class.
    pub role: &'a str,
    /// The other reference.
    pub result_role: &'a str,
    /// The class the other reference names.
    pub result_class: &'a str,
}

impl Repository {
    /// Whether `name` is an association class (itself or by inheritance).
    pub fn is_association(&self, name: &str) -> bool {
        self.lineage(name).iter().any(|c| c.association)
    }

    /// Each way class `source` takes part in an association class of the
    /// repository: every reference of every association class that names
    /// `source` or one of its superclasses, with each other reference of
    /// that class. A class named twice in one association (as both ends)
    /// gives a link for each direction.
    pub fn class_links(&self, source: &str) -> Vec<ClassLink<'_>> {
        let mut out = Vec::new();
        for association in self.classes().filter(|c| self.is_association(&c.name)) {
            let refs: Vec<(&str, &str)> = self
                .properties(&association.name)
                .into_iter()
                .filter_map(|p| match &p.cim_type {
                    CimType::Reference(target) => Some((p.name.as_str(), target.as_str())),
                    _ => None,
                })
                .collect();
            for (role, target) in &refs {
                if !self.is_a(source, target) {
                    continue;
                }
                for (result_role, result_class) in refs.iter().filter(|(r, _)| r != role) {
                    out.push(ClassLink {
                        association,
                        role,
                        result_role,
                        result_class,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_links_to_the_classes_its_associations_name() {
        let repo = Repository::builtin().unwrap();
        let links = repo.class_links("Msvm_ComputerSystem");
        let device = links
            .iter()
            .find(|l| l.association.name == "Msvm_SystemDevice")
            .expect("Msvm_SystemDevice links a computer system");
        assert_eq!(
            (device.role, device.result_role, device.result_class),
            ("GroupComponent", "PartComponent", "CIM_LogicalDevice")
        );
        assert!(repo.is_association("Msvm_SystemDevice"));
        assert!(!repo.is_association("Msvm_ComputerSystem"));
        // A component is a CIM_LogicalDevice: the same association, back.
        let back = repo.class_links("Msvm_HeartbeatComponent");
        assert!(back
            .iter()
            .any(|l| l.association.name == "Msvm_SystemDevice"
                && l.role == "PartComponent"
                && l.result_class == "CIM_System"));
        assert!(repo.class_links("No_SuchClass").is_empty());
    }
}
