# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible connection plugin: run tasks in a VM through guestcomm.

Every operation is one run of the ``guestcomm`` command line: modules and
commands through ``guestcomm exec``, files through ``guestcomm cp``, either
through the guestcommd daemon (the VM by name) or directly to an agent's
address.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: guestcomm
short_description: Run tasks in a VM through guestcomm (guestcommd or an agent)
description:
  - Runs Ansible's commands and modules in a virtual machine with the C(guestcomm) command line,
    either through the guestcommd daemon, naming the VM (O(remote_addr), by default the inventory
    host name), or directly to a guest agent's transport address (O(agent_address)).
  - Commands run through C(guestcomm exec TARGET -- /bin/sh -c CMD) (the shell is
    C(ansible_shell_executable)); standard input is streamed to the command and its exit code is kept.
    Privilege escalation (C(become)) is applied by Ansible's shell plugin on that command line, as with
    Ansible's other connection plugins; the agent usually runs as root, so C(become) needs no password.
  - Files move with C(guestcomm cp), which writes a temporary file beside the destination, checks its
    BLAKE3 against the sender's, syncs it and renames it into place, so an upload or a fetch is atomic
    and checksummed.
  - Pipelining is supported (the module goes to the interpreter's standard input through C(exec)).
  - A refusal (a role that may not exec or copy, a host or guest policy, a disabled service) or a
    connection failure ends the task with the message C(guestcomm) printed, which is the daemon's or the
    agent's reason.
author: guestcomm contributors
version_added: "0.1.0"
extends_documentation_fragment:
  - connection_pipelining
options:
  remote_addr:
    description:
      - The VM's name in guestcommd (C(guestcomm vm list)). Ignored with O(agent_address).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_guestcomm_vm
  remote_user:
    description:
      - The guest user the agent runs commands as, that is the agent's own user (root in most guests).
        guestcomm does not log in as another user; use C(become) to run as one.
      - Ansible compares it with C(become_user) to decide whether its temporary files must be made
        readable by another user.
    type: str
    default: root
    vars:
      - name: ansible_guestcomm_agent_user
    env:
      - name: ANSIBLE_GUESTCOMM_AGENT_USER
    ini:
      - section: guestcomm_connection
        key: agent_user
  guestcomm_path:
    description:
      - The C(guestcomm) command line to run (a name looked up in E(PATH), or a path).
    type: str
    default: guestcomm
    vars:
      - name: ansible_guestcomm_path
    env:
      - name: ANSIBLE_GUESTCOMM_PATH
    ini:
      - section: guestcomm_connection
        key: guestcomm_path
  api:
    description:
      - The guestcommd API address, C(guestcomm --api) - C(unix:///PATH) (guestcomm's default is
        C(unix:///run/guestcomm/api.sock), or E(GUESTCOMM_API) when set) or C(tcp://IP:PORT) with mutual
        TLS (O(api_cert), O(api_key), O(api_ca)).
    type: str
    vars:
      - name: ansible_guestcomm_api
    env:
      - name: ANSIBLE_GUESTCOMM_API
    ini:
      - section: guestcomm_connection
        key: api
  api_cert:
    description:
      - With a C(tcp://) API, this client's certificate (PEM); guestcommd maps its fingerprint to a role.
        The three TLS files go together.
    type: path
    vars:
      - name: ansible_guestcomm_api_cert
    env:
      - name: ANSIBLE_GUESTCOMM_API_CERT
    ini:
      - section: guestcomm_connection
        key: api_cert
  api_key:
    description:
      - With a C(tcp://) API, the private key of O(api_cert) (PEM).
    type: path
    vars:
      - name: ansible_guestcomm_api_key
    env:
      - name: ANSIBLE_GUESTCOMM_API_KEY
    ini:
      - section: guestcomm_connection
        key: api_key
  api_ca:
    description:
      - With a C(tcp://) API, the CA that signed guestcommd's certificate (PEM); the certificate must name
        the IP address dialled.
    type: path
    vars:
      - name: ansible_guestcomm_api_ca
    env:
      - name: ANSIBLE_GUESTCOMM_API_CA
    ini:
      - section: guestcomm_connection
        key: api_ca
  agent_address:
    description:
      - Talk to the guest agent at this transport address directly, without guestcommd - C(unix:///PATH),
        C(tcp://IP:PORT), C(vsock://CID[:PORT]) or C(hvsock-uds:///PATH[?port=PORT]).
      - A Unix socket path holding C(:/) cannot be used for file copies (C(guestcomm cp --help)).
    type: str
    vars:
      - name: ansible_guestcomm_agent_address
    env:
      - name: ANSIBLE_GUESTCOMM_AGENT_ADDRESS
    ini:
      - section: guestcomm_connection
        key: agent_address
  identity:
    description:
      - With O(agent_address), the key file shared with an agent started with C(--credentials)
        (C(guestcomm identity new)). VMs reached through guestcommd need none - the daemon holds their keys.
    type: path
    vars:
      - name: ansible_guestcomm_identity
    env:
      - name: ANSIBLE_GUESTCOMM_IDENTITY
    ini:
      - section: guestcomm_connection
        key: identity
notes:
  - Become methods that wait for a password on a terminal are not supported; C(exec) has no terminal.
    The agent runs as root in most guests, where C(su) and C(sudo) ask for none.
  - The guest needs Python for most modules, as with any other connection.
"""

EXAMPLES = r"""
# inventory.ini: a VM known to guestcommd, by name
# web1 ansible_connection=guestcomm.guestcomm.guestcomm

# an agent reached directly, with its key
# db1 ansible_connection=guestcomm.guestcomm.guestcomm ansible_guestcomm_agent_address=vsock://7 ansible_guestcomm_identity=/etc/guestcomm/db1.key

# a remote guestcommd over its mutual-TLS API
# [remote:vars]
# ansible_connection=guestcomm.guestcomm.guestcomm
# ansible_guestcomm_api=tcp://192.0.2.10:7443
# ansible_guestcomm_api_cert=/etc/guestcomm/client.crt
# ansible_guestcomm_api_key=/etc/guestcomm/client.key
# ansible_guestcomm_api_ca=/etc/guestcomm/ca.crt
"""

import os
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# guestcomm's own exit codes (guestcomm --help): it failed to reach or talk
# to the agent, or was refused (role, disabled service, connection lost).
GUESTCOMM_FAILED = 125
# exec: the agent could not or would not run the command (policy,
# permission, working directory, user), or the program does not exist.
EXEC_REFUSED = (126, 127)
# Every line guestcomm prints about its own failure starts so, and comes
# after everything the guest command wrote: with one of the codes above as
# the exit status, a last stderr line so prefixed is guestcomm's, not the
# command's (a command exiting 126 or 127 whose own last line begins
# "guestcomm: " would be taken for a refusal).
GUESTCOMM_PREFIX = b"guestcomm: "


def guestcomm_message(stderr):
    """The last line guestcomm printed about its own failure, or None."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if lines and lines[-1].startswith(GUESTCOMM_PREFIX):
        return to_text(lines[-1][len(GUESTCOMM_PREFIX):], errors="surrogate_or_replace")
    return None


class Connection(ConnectionBase):
    """Runs commands and moves files with the guestcomm command line."""

    transport = "guestcomm.guestcomm.guestcomm"
    has_pipelining = True
    has_tty = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cli = None

    def _connect(self):
        """Finds the guestcomm command line; every operation is its own run."""
        if not self._connected:
            path = self.get_option("guestcomm_path")
            cli = shutil.which(path)
            if cli is None:
                raise AnsibleError("guestcomm: the command line %r was not found (set guestcomm_path)" % path)
            self._cli = cli
            display.vvv("GUESTCOMM %s, target %s" % (cli, self._target()), host=self._display_host())
            self._connected = True
        return self

    def _target(self):
        """The TARGET of guestcomm exec and cp: an agent's address or a VM name."""
        address = self.get_option("agent_address")
        if address:
            return address
        vm = self.get_option("remote_addr")
        if not vm:
            raise AnsibleError("guestcomm: no VM name (set ansible_host or ansible_guestcomm_vm)")
        if "://" in vm:
            raise AnsibleError("guestcomm: %r is an address, not a VM name: set agent_address for an agent" % vm)
        return vm

    def _display_host(self):
        return self.get_option("remote_addr") or self.get_option("agent_address")

    def _base_command(self):
        """guestcomm and its global API options."""
        command = [self._cli]
        if not self.get_option("agent_address"):
            api = self.get_option("api")
            if api:
                command += ["--api", api]
            tls = [self.get_option(name) for name in ("api_cert", "api_key", "api_ca")]
            if any(tls):
                if not all(tls):
                    raise AnsibleError("guestcomm: api_cert, api_key and api_ca go together")
                command += ["--api-cert", tls[0], "--api-key", tls[1], "--api-ca", tls[2]]
        return command

    def _identity(self):
        identity = self.get_option("identity")
        if identity and self.get_option("agent_address"):
            return ["--identity", identity]
        return []

    def _run(self, command, in_data=None):
        """Runs a guestcomm command line, feeding in_data (bytes) on stdin."""
        display.vvvv("GUESTCOMM RUN %s" % command, host=self._display_host())
        try:
            process = subprocess.Popen(
                [to_bytes(arg, errors="surrogate_or_strict") for arg in command],
                stdin=subprocess.PIPE if in_data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise AnsibleError("guestcomm: cannot run %s: %s" % (command[0], to_native(e)))
        stdout, stderr = process.communicate(in_data)
        return process.returncode, stdout, stderr

    def _check_refusal(self, returncode, stderr, what):
        """Raises for guestcomm's own failures, with the daemon's or agent's reason."""
        message = guestcomm_message(stderr)
        if message is None:
            return
        if returncode == GUESTCOMM_FAILED:
            raise AnsibleConnectionFailure("guestcomm: %s: %s" % (what, message))
        raise AnsibleError("guestcomm: %s: %s" % (what, message))

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Runs cmd with the guest's shell; stdin streamed, exit code kept."""
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        shell = self._play_context.executable or "/bin/sh"
        display.vvv("EXEC %s" % cmd, host=self._display_host())
        command = self._base_command() + ["exec"] + self._identity()
        if in_data is None:
            command.append("--no-stdin")
        command += [self._target(), "--", shell, "-c", cmd]
        returncode, stdout, stderr = self._run(command, in_data)
        if returncode == GUESTCOMM_FAILED or returncode in EXEC_REFUSED:
            self._check_refusal(returncode, stderr, "exec in %s refused or failed" % self._target())
        return returncode, stdout, stderr

    def _guest_path(self, path):
        path = to_text(path, errors="surrogate_or_strict")
        if not path.startswith("/"):
            raise AnsibleError("guestcomm: guest paths must be absolute, got %r" % path)
        return "%s:%s" % (self._target(), path)

    def _copy(self, source, destination, what):
        # A local path is made absolute: guestcomm takes "NAME:PATH" with no
        # '/' before the ':' for a VM's path.
        command = self._base_command() + ["cp", "--force"] + self._identity() + [source, destination]
        returncode, _, stderr = self._run(command)
        if returncode == 0:
            return
        self._check_refusal(returncode, stderr, what)
        raise AnsibleError("guestcomm: %s: exit %d: %s" % (what, returncode, to_text(stderr).strip()))

    def put_file(self, in_path, out_path):
        """Uploads with guestcomm cp (atomic: temporary file, BLAKE3 check, rename)."""
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._display_host())
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleError("guestcomm: file or module does not exist: %s" % in_path)
        self._copy(os.path.abspath(in_path), self._guest_path(out_path), "copy of %s to %s" % (in_path, out_path))

    def fetch_file(self, in_path, out_path):
        """Downloads with guestcomm cp (atomic: temporary file, BLAKE3 check, rename)."""
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._display_host())
        self._copy(self._guest_path(in_path), os.path.abspath(out_path), "copy of %s to %s" % (in_path, out_path))

    def reset(self):
        """Nothing persists between operations."""

    def close(self):
        """Nothing to close: every operation is its own guestcomm run."""
        self._connected = False
