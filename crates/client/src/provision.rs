//! How a VM's key reaches its guest at boot, by the means the hypervisor
//! already has, as the systemd credential `guestcomm.key` the agent looks
//! for: the options or snippets an operator adds to a VM's definition.
//!
//! | means | what the guest reads | the key is visible to |
//! |---|---|---|
//! | QEMU `-fw_cfg` from a file ([`qemu_fw_cfg`]) | `/sys/firmware/qemu_fw_cfg/by_name/opt/io.systemd.credentials/guestcomm.key/raw` (root only) | root on the host, QEMU's user |
//! | QEMU `-smbios type=11,path=` ([`qemu_smbios_file`]) | SMBIOS OEM strings (root only) | root on the host, QEMU's user |
//! | QEMU `-smbios type=11,value=` ([`qemu_smbios_inline`]) | the same | every host user (`ps`) |
//! | libvirt `<sysinfo type='fwcfg'>` ([`libvirt_fw_cfg`]) | fw_cfg | root on the host, QEMU's user |
//! | libvirt `<oemStrings>` ([`libvirt_smbios`]) | SMBIOS | libvirt clients that read the domain XML |
//! | cloud-init `write_files` ([`cloud_init`]) | `/etc/credstore/guestcomm.key` (0600) | whoever can read the user data |
//!
//! The kernel command line is not offered: every user in the guest can read
//! `/proc/cmdline` ([`KERNEL_CMDLINE_REFUSAL`]).

use std::path::Path;

use base64::Engine;
use guestcomm_protocol::auth::{
    credentials_text, Psk, CREDENTIAL_NAME, FW_CFG_CREDENTIAL, SMBIOS_CREDENTIAL_BINARY,
};

/// Why the kernel command line never carries a key.
pub const KERNEL_CMDLINE_REFUSAL: &str = "the kernel command line is readable by every user in the guest (/proc/cmdline), so it never carries a VM's key: use --qemu-args (fw_cfg or SMBIOS, read by root only), --libvirt-xml or --cloud-init";

/// Where the cloud-init snippet puts the key: systemd's credential store,
/// which the agent's unit imports (`ImportCredential=guestcomm.key`).
pub const CREDSTORE_PATH: &str = "/etc/credstore/guestcomm.key";

/// A path that cannot be written into a VM's options.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Not UTF-8, or holding characters the printed form cannot carry.
    #[error("cannot use {path:?} in a VM definition: {reason}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The text of an SMBIOS type 11 OEM string carrying `psk`
/// (`io.systemd.credential.binary:guestcomm.key=BASE64`).
pub fn smbios_oem_string(psk: &Psk) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials_text(psk));
    format!("{SMBIOS_CREDENTIAL_BINARY}{encoded}")
}

/// `path` as text that QEMU's option syntax and a shell's word splitting
/// both keep whole: UTF-8, absolute, no whitespace or control characters;
/// a comma is doubled, as QEMU's options escape it.
fn qemu_path(path: &Path) -> Result<String, ProvisionError> {
    let text = checked_path(path)?;
    Ok(text.replace(',', ",,"))
}

/// `path` as UTF-8, absolute, without whitespace or control characters.
fn checked_path(path: &Path) -> Result<&str, ProvisionError> {
    let refuse = |reason| ProvisionError::Path {
        path: path.display().to_string(),
        reason,
    };
    let text = path.to_str().ok_or_else(|| refuse("it is not UTF-8"))?;
    if !path.is_absolute() {
        return Err(refuse(
            "it is relative (QEMU and libvirt may run elsewhere): give an absolute path",
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(
            "it holds whitespace or control characters: choose another path",
        ));
    }
    Ok(text)
}

/// The QEMU options that give the guest the credentials file at `path`
/// as a firmware configuration entry.
pub fn qemu_fw_cfg(path: &Path) -> Result<Vec<String>, ProvisionError> {
    Ok(vec![
        "-fw_cfg".into(),
        format!("name={FW_CFG_CREDENTIAL},file={}", qemu_path(path)?),
    ])
}

/// The QEMU options that give the guest the OEM string in the file at
/// `path` (written by the caller: [`smbios_oem_string`]) as an SMBIOS type
/// 11 string, keeping the key off QEMU's command line.
pub fn qemu_smbios_file(path: &Path) -> Result<Vec<String>, ProvisionError> {
    Ok(vec![
        "-smbios".into(),
        format!("type=11,path={}", qemu_path(path)?),
    ])
}

/// The QEMU options that give the guest `psk` as an SMBIOS type 11 string
/// on the command line itself (every host user can read it with `ps`).
pub fn qemu_smbios_inline(psk: &Psk) -> Vec<String> {
    vec![
        "-smbios".into(),
        format!("type=11,value={}", smbios_oem_string(psk)),
    ]
}

/// The libvirt domain XML (a child of `<domain>`) that gives the guest the
/// credentials file at `path` as a firmware configuration entry.
pub fn libvirt_fw_cfg(path: &Path) -> Result<String, ProvisionError> {
    Ok(format!(
        "<sysinfo type='fwcfg'>\n  {}\n</sysinfo>\n",
        libvirt_fw_cfg_entry(path)?
    ))
}

/// The `<entry>` of a libvirt `<sysinfo type='fwcfg'>` that gives the
/// guest the credentials file at `path` (guestcommd adds it to the domains
/// it follows).
pub fn libvirt_fw_cfg_entry(path: &Path) -> Result<String, ProvisionError> {
    let path = quick_xml::escape::escape(checked_path(path)?);
    Ok(format!("<entry name='{FW_CFG_CREDENTIAL}' file='{path}'/>"))
}

/// The libvirt domain XML that gives the guest `psk` as an SMBIOS type 11
/// string: a `<sysinfo>` child of `<domain>`, and the `<smbios>` element
/// that goes into its `<os>`.
pub fn libvirt_smbios(psk: &Psk) -> String {
    let oem = smbios_oem_string(psk);
    let oem = quick_xml::escape::escape(&oem);
    format!(
        "<sysinfo type='smbios'>\n  <oemStrings>\n    <entry>{oem}</entry>\n  </oemStrings>\n</sysinfo>\n\
         <!-- and inside <os>: -->\n<smbios mode='sysinfo'/>\n"
    )
}

/// A cloud-init `#cloud-config` document that writes `psk` into systemd's
/// credential store in the guest (root only, mode 0600).
pub fn cloud_init(psk: &Psk) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials_text(psk));
    format!(
        "#cloud-config\n\
         # The guestcomm agent's key ({CREDENTIAL_NAME}), imported by its unit\n\
         # (ImportCredential={CREDENTIAL_NAME}).\n\
         write_files:\n  \
           - path: {CREDSTORE_PATH}\n    \
             owner: root:root\n    \
             permissions: '0600'\n    \
             encoding: b64\n    \
             content: {encoded}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestcomm_protocol::auth::parse_credentials;

    fn key() -> Psk {
        Psk::from_hex(&"ab".repeat(32)).unwrap()
    }

    fn decoded(encoded: &str) -> Psk {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        parse_credentials(std::str::from_utf8(&bytes).unwrap(), "test").unwrap()
    }

    #[test]
    fn the_oem_string_carries_the_credentials_file_in_base64() {
        let oem = smbios_oem_string(&key());
        let encoded = oem.strip_prefix(SMBIOS_CREDENTIAL_BINARY).unwrap();
        assert_eq!(decoded(encoded).secret_hex(), key().secret_hex());
    }

    #[test]
    fn qemu_options_escape_commas_and_refuse_what_a_shell_would_split() {
        let args = qemu_fw_cfg(Path::new("/var/lib/vm,1/web1.key")).unwrap();
        assert_eq!(
            args,
            [
                "-fw_cfg",
                "name=opt/io.systemd.credentials/guestcomm.key,file=/var/lib/vm,,1/web1.key"
            ]
        );
        let args = qemu_smbios_file(Path::new("/k/web1.oem")).unwrap();
        assert_eq!(args, ["-smbios", "type=11,path=/k/web1.oem"]);
        for (bad, why) in [
            ("/a b/k", "whitespace"),
            ("k.key", "relative"),
            ("/a\nb", "whitespace"),
        ] {
            let err = qemu_fw_cfg(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn inline_smbios_options_hold_the_oem_string() {
        let args = qemu_smbios_inline(&key());
        assert_eq!(args[0], "-smbios");
        let value = args[1].strip_prefix("type=11,value=").unwrap();
        assert_eq!(value, smbios_oem_string(&key()));
        assert!(!value.contains(','), "QEMU would split {value}");
    }

    #[test]
    fn libvirt_snippets_name_the_entry_and_escape_the_path() {
        let xml = libvirt_fw_cfg(Path::new("/k/a&b'.key")).unwrap();
        assert!(
            xml.contains("<entry name='opt/io.systemd.credentials/guestcomm.key' file='/k/a&amp;b&apos;.key'/>"),
            "{xml}"
        );
        let xml = libvirt_smbios(&key());
        assert!(xml.contains(&format!("<entry>{}</entry>", smbios_oem_string(&key()))));
        assert!(xml.contains("<smbios mode='sysinfo'/>"), "{xml}");
    }

    #[test]
    fn the_cloud_init_document_writes_a_root_only_credential() {
        let doc = cloud_init(&key());
        assert!(doc.starts_with("#cloud-config\n"), "{doc}");
        assert!(
            doc.contains("  - path: /etc/credstore/guestcomm.key\n"),
            "{doc}"
        );
        assert!(doc.contains("    permissions: '0600'\n"), "{doc}");
        let encoded = doc
            .lines()
            .find_map(|l| l.trim().strip_prefix("content: "))
            .unwrap();
        assert_eq!(decoded(encoded).secret_hex(), key().secret_hex());
    }
}
