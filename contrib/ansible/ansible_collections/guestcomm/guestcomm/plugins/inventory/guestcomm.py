# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible inventory plugin: the VMs guestcommd knows, from `guestcomm vm list --json`."""

from __future__ import annotations

DOCUMENTATION = r"""
name: guestcomm
short_description: The VMs known to one or several guestcommd daemons
description:
  - Lists the VMs of each guestcommd API endpoint with C(guestcomm vm list --json), one host per VM,
    reached through the C(guestcomm.guestcomm.guestcomm) connection and the same endpoint.
  - Host variables - C(guestcomm_id) (the VM's GUID), C(guestcomm_status) (the agent's health as
    guestcommd last saw it), C(guestcomm_endpoint) (the agent's transport address),
    C(guestcomm_interface_enabled), C(guestcomm_authenticated), and C(guestcomm_kvp), the guest's
    intrinsic key-value pool (OS, kernel, FQDN, addresses, agent version; C(guestcomm kvp list VM --pool
    auto)) where it can be read, else none.
  - Groups - C(guestcomm) (every VM) and one per status, its name lowercased with C(_) for what is not a
    letter or digit - C(guestcomm_status_ok), C(guestcomm_status_no_contact), C(guestcomm_status_lost_comm),
    C(guestcomm_status_paused), C(guestcomm_status_off) - plus what O(groups) and O(keyed_groups) make.
  - What the guest wrote (its key-value pool) is marked unsafe, so Ansible never evaluates it as a template.
  - The inventory file's name must end in C(guestcomm.yml) or C(guestcomm.yaml).
author: guestcomm contributors
version_added: "0.1.0"
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks the file as this plugin's.
    required: true
    choices: ["guestcomm.guestcomm.guestcomm"]
  guestcomm_path:
    description: The C(guestcomm) command line (a name looked up in E(PATH), or a path).
    type: str
    default: guestcomm
    env:
      - name: ANSIBLE_GUESTCOMM_PATH
  endpoints:
    description:
      - The guestcommd API endpoints to list. Each entry has C(api) (C(unix:///PATH), or C(tcp://IP:PORT)
        with C(api_cert), C(api_key) and C(api_ca) for mutual TLS); a plain string is an C(api).
      - When absent, the one endpoint C(guestcomm) finds by itself (E(GUESTCOMM_API), else
        C(unix:///run/guestcomm/api.sock)).
      - A VM name listed by two endpoints is kept from the first, with a warning.
    type: list
    elements: raw
    default: []
  kvp:
    description:
      - Read each reachable VM's intrinsic key-value pool into C(guestcomm_kvp) (needs guestcommd's
        C(operator) role; listing the VMs needs C(viewer)). A pool that cannot be read leaves it null.
    type: bool
    default: true
  timeout:
    description: Seconds each C(guestcomm) run may take before it is killed and its endpoint or VM skipped.
    type: int
    default: 30
"""

EXAMPLES = r"""
# guestcomm.yml
plugin: guestcomm.guestcomm.guestcomm
endpoints:
  - api: unix:///run/guestcomm/api.sock
  - api: tcp://192.0.2.10:7443
    api_cert: /etc/guestcomm/client.crt
    api_key: /etc/guestcomm/client.key
    api_ca: /etc/guestcomm/ca.crt
keyed_groups:
  - key: guestcomm_kvp.OSName | default('unknown')
    prefix: os
"""

import json
import re
import shutil
import subprocess

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

display = Display()

TLS_KEYS = ("api_cert", "api_key", "api_ca")


class InventoryModule(BaseInventoryPlugin, Constructable):
    """One host per VM of each guestcommd endpoint."""

    NAME = "guestcomm.guestcomm.guestcomm"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("guestcomm.yml", "guestcomm.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        path_option = self.get_option("guestcomm_path")
        cli = shutil.which(path_option)
        if cli is None:
            raise AnsibleParserError("guestcomm: the command line %r was not found (set guestcomm_path)" % path_option)
        self._cli = cli
        self.inventory.add_group("guestcomm")
        endpoints = self.get_option("endpoints") or [{}]
        for endpoint in endpoints:
            self._add_endpoint(self._endpoint(endpoint))

    @staticmethod
    def _endpoint(entry):
        if isinstance(entry, str):
            return {"api": entry}
        if not isinstance(entry, dict):
            raise AnsibleParserError("guestcomm: an endpoint is a string or a mapping, got %r" % (entry,))
        unknown = set(entry) - {"api"} - set(TLS_KEYS)
        if unknown:
            raise AnsibleParserError("guestcomm: unknown endpoint keys %s" % sorted(unknown))
        present = [key for key in TLS_KEYS if entry.get(key)]
        if present and len(present) != len(TLS_KEYS):
            raise AnsibleParserError("guestcomm: api_cert, api_key and api_ca go together")
        return entry

    def _guestcomm(self, endpoint, args):
        """Runs guestcomm against endpoint; returns parsed JSON stdout or raises."""
        command = [self._cli]
        if endpoint.get("api"):
            command += ["--api", endpoint["api"]]
        if endpoint.get("api_cert"):
            command += ["--api-cert", endpoint["api_cert"], "--api-key", endpoint["api_key"], "--api-ca", endpoint["api_ca"]]
        command += args
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.get_option("timeout"))
        except subprocess.TimeoutExpired:
            raise RuntimeError("%s took longer than %s s" % (" ".join(args), self.get_option("timeout")))
        if done.returncode != 0:
            raise RuntimeError(to_text(done.stderr).strip() or "exit %d" % done.returncode)
        return json.loads(done.stdout)

    def _add_endpoint(self, endpoint):
        where = endpoint.get("api") or "guestcomm's default API"
        try:
            vms = self._guestcomm(endpoint, ["vm", "list", "--json"])
        except (RuntimeError, ValueError) as e:
            raise AnsibleParserError("guestcomm: cannot list the VMs of %s: %s" % (where, to_native(e)))
        for vm in vms:
            name = vm.get("name")
            if not name:
                continue
            if name in self.inventory.hosts:
                display.warning("guestcomm: VM %s of %s is also listed by another endpoint; kept the first" % (name, where))
                continue
            self._add_vm(endpoint, vm)

    def _add_vm(self, endpoint, vm):
        name = vm["name"]
        status = (vm.get("health") or {}).get("status") or "unknown"
        host = self.inventory.add_host(name, group="guestcomm")
        variables = {
            "ansible_connection": "guestcomm.guestcomm.guestcomm",
            "ansible_host": name,
            "ansible_guestcomm_path": self._cli,
            "guestcomm_id": vm.get("id"),
            "guestcomm_status": status,
            "guestcomm_endpoint": vm.get("endpoint"),
            "guestcomm_interface_enabled": vm.get("interface_enabled"),
            "guestcomm_authenticated": vm.get("authenticated"),
            "guestcomm_kvp": self._kvp(endpoint, name) if self.get_option("kvp") else None,
        }
        if endpoint.get("api"):
            variables["ansible_guestcomm_api"] = endpoint["api"]
        for key in TLS_KEYS:
            if endpoint.get(key):
                variables["ansible_guestcomm_" + key] = endpoint[key]
        for key, value in variables.items():
            self.inventory.set_variable(host, key, value)
        group = self.inventory.add_group("guestcomm_status_" + re.sub(r"[^a-z0-9]+", "_", status.lower()))
        self.inventory.add_child(group, host)
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)

    def _kvp(self, endpoint, name):
        """The guest's intrinsic pool, or None when it cannot be read now."""
        try:
            pool = self._guestcomm(endpoint, ["kvp", "list", name, "--pool", "auto", "--json"])
        except (RuntimeError, ValueError) as e:
            display.vvv("guestcomm: no key-value pool of %s: %s" % (name, to_native(e)))
            return None
        # The guest wrote these: never templated.
        return wrap_var(pool) if isinstance(pool, dict) else None
