"""Shared by the pywbem scripts of crates/cli/tests/wbem.rs: a connection to
guestcommd's WBEM listener and lookups of one VM's objects. pywbem is used
as an unmodified client: nothing here knows guestcomm's encoding."""

import sys

import pywbem

NAMESPACE = "root/virtualization/v2"
EXEC_GUID = "00004744-facb-11e6-bd58-64006a7986d3"


def connect(url):
    """A pywbem connection to url (http://127.0.0.1:PORT)."""
    return pywbem.WBEMConnection(url, default_namespace=NAMESPACE, timeout=30)


def vm_system(conn, vm_name):
    """The Msvm_ComputerSystem of the VM named vm_name."""
    found = [
        s for s in conn.EnumerateInstances("Msvm_ComputerSystem")
        if s["ElementName"] == vm_name and s["Caption"] == "Virtual Machine"
    ]
    assert len(found) == 1, f"one Msvm_ComputerSystem for {vm_name}: {found}"
    return found[0]


def service(conn, vm_id, guid, classname="Msvm_GuestCommunicationService"):
    """The instance of service guid on the VM whose id is vm_id."""
    found = [
        s for s in conn.EnumerateInstances(classname)
        if s["SystemName"] == vm_id and s["Name"] == guid
    ]
    assert len(found) == 1, f"one {classname} {guid} on {vm_id}: {found}"
    return found[0]


def expect_cim_error(status, call, *args, **kwargs):
    """Runs call and checks that it fails with CIM status `status`."""
    try:
        call(*args, **kwargs)
    except pywbem.CIMError as e:
        assert e.status_code == status, f"expected CIM status {status}, got {e}"
        return e
    raise AssertionError(f"expected CIM status {status}, the call succeeded")


def main(run):
    """Runs run(argv) and reports an assertion failure on one line."""
    try:
        run(sys.argv[1:])
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        raise
