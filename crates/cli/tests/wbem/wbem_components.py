"""A VM's integration components through pywbem, as a Hyper-V script
reaches them: find the VM by ElementName, walk Msvm_SystemDevice to each
component, read the guest's key-value items, shut the guest down.
Arguments: URL MODE ...
  devices VM GONE_VM     the devices of VM (agent answering, guest pair build=42
                         written) and of GONE_VM (no agent); prints "devices ok"
  shutdown VM FORCE WHY  InitiateShutdown; prints the ReturnValue
  reboot VM FORCE WHY    InitiateReboot; prints the ReturnValue
  errors VM GONE_VM      bad input and failures; prints "errors ok"
"""

import re
import xml.etree.ElementTree as ET

import pywbem

import wbem_common as common

COMPONENTS = {
    # class: (Caption, ElementName, Description)
    "Msvm_GuestServiceInterfaceComponent": (
        "Guest Service Interface", "Guest Service Interface", "Microsoft Guest Service Interface"),
    "Msvm_HeartbeatComponent": ("Heartbeat", "Heartbeat", "Microsoft Heartbeat Service"),
    "Msvm_KvpExchangeComponent": (
        "Key-Value Pair Exchange", "Key-Value pair Exchange",
        "Microsoft Key-Value Pair Exchange Service"),
    "Msvm_ShutdownComponent": ("Shutdown", "Shutdown", "Microsoft Shutdown Service"),
    "Msvm_TimeSyncComponent": (
        "Time Synchronization", "Time Synchronization", "Microsoft Time Synchronization Service"),
    "Msvm_VssComponent": ("VSS", "VSS", "Microsoft VSS Service"),
}


def component(conn, vm, classname):
    """The one classname device of vm, found through Msvm_SystemDevice."""
    found = conn.Associators(vm.path, AssocClass="Msvm_SystemDevice", ResultClass=classname)
    assert len(found) == 1, f"one {classname} of {vm['ElementName']}: {found}"
    return found[0]


def data_items(texts):
    """Embedded Msvm_KvpExchangeDataItem texts as {Name: (Data, Source)}, read
    as a Hyper-V script does: parse the CIM-XML, pick the PROPERTY values."""
    items = {}
    for text in texts:
        root = ET.fromstring(text)
        assert root.tag == "INSTANCE" and root.get("CLASSNAME") == "Msvm_KvpExchangeDataItem", text
        props = {p.get("NAME"): p.findtext("VALUE") for p in root.iter("PROPERTY")}
        items[props["Name"]] = (props["Data"], int(props["Source"]))
    return items


def devices(conn, vm_name, gone_name):
    vm = common.vm_system(conn, vm_name)
    vm_id = vm["Name"]
    # guestcomm does not start or stop VMs; a VM whose agent answers is OK.
    assert list(vm["AvailableRequestedStates"]) == [], vm.tomof()
    assert list(vm["OperationalStatus"]) == [2] and vm["HealthState"] == 5, vm.tomof()
    linked = conn.Associators(vm.path, AssocClass="Msvm_SystemDevice")
    assert sorted(d.classname for d in linked) == sorted(COMPONENTS), linked
    for classname, (caption, element, description) in COMPONENTS.items():
        c = component(conn, vm, classname)
        assert (c["Caption"], c["ElementName"], c["Description"]) == (caption, element, description), c.tomof()
        assert c["Name"] == caption, c["Name"]
        assert c["SystemCreationClassName"] == "Msvm_ComputerSystem" and c["SystemName"] == vm_id
        assert c["CreationClassName"] == classname
        assert re.fullmatch(r"Microsoft:" + vm_id + r"\\[0-9a-f-]{36}", c["DeviceID"]), c["DeviceID"]
        assert c["EnabledState"] == 2, (classname, c["EnabledState"])
        assert list(c["OperationalStatus"]) == [2] and list(c["StatusDescriptions"]) == ["OK"], c.tomof()
        assert c["HealthState"] == 5 and c["Status"] == "OK", c.tomof()
        # The states RequestStateChange takes: the interface's switch, the
        # other components' policy (Deferred too).
        states = [2, 3] if classname == "Msvm_GuestServiceInterfaceComponent" else [2, 3, 8]
        assert list(c["AvailableRequestedStates"]) == states, (classname, c.tomof())
        assert conn.GetInstance(c.path)["DeviceID"] == c["DeviceID"]
        # And back from the component to its VM.
        (back,) = conn.AssociatorNames(c.path, AssocClass="Msvm_SystemDevice")
        assert back.classname == "Msvm_ComputerSystem" and back["Name"] == vm_id, back
    # Without AssocClass, as Get-VMIntegrationService's scripts often do.
    (gsi,) = conn.Associators(vm.path, ResultClass="Msvm_GuestServiceInterfaceComponent")
    assert gsi["EnabledState"] == 2
    refs = conn.References(vm.path, ResultClass="Msvm_SystemDevice")
    assert len(refs) == len(COMPONENTS), refs
    for r in refs:
        assert r["GroupComponent"].keybindings == vm.path.keybindings, r.tomof()
    assert len(conn.EnumerateInstanceNames("Msvm_SystemDevice")) == 2 * len(COMPONENTS)
    assert len(conn.EnumerateInstances("CIM_LogicalDevice")) == 2 * len(COMPONENTS)

    kvp = component(conn, vm, "Msvm_KvpExchangeComponent")
    guest = data_items(kvp["GuestExchangeItems"])
    assert guest.get("build") == ("42", 1), guest
    intrinsic = data_items(kvp["GuestIntrinsicExchangeItems"])
    assert intrinsic and all(source == 2 for _, source in intrinsic.values()), intrinsic
    assert any(v.startswith("guestcomm-agent") for v, _ in intrinsic.values()), intrinsic
    rows = conn.ExecQuery("WQL", "SELECT GuestExchangeItems FROM Msvm_KvpExchangeComponent "
                                 f"WHERE SystemName = '{vm_id}'")
    assert len(rows) == 1 and data_items(rows[0]["GuestExchangeItems"]) == guest, rows
    cls = conn.GetClass("Msvm_KvpExchangeComponent", LocalOnly=False, IncludeQualifiers=True)
    items = cls.properties["GuestExchangeItems"]
    assert items.is_array and items.qualifiers["EmbeddedInstance"].value == "Msvm_KvpExchangeDataItem"
    assoc = conn.GetClass("Msvm_SystemDevice", LocalOnly=False, IncludeQualifiers=True)
    assert assoc.qualifiers["Association"].value and assoc.qualifiers["Aggregation"].value
    assert assoc.properties["GroupComponent"].reference_class == "CIM_System", assoc.properties
    assert assoc.properties["PartComponent"].reference_class == "CIM_LogicalDevice"
    heartbeat_cls = conn.GetClass("Msvm_HeartbeatComponent", LocalOnly=False)
    assert heartbeat_cls.superclass == "CIM_LogicalDevice"
    assert heartbeat_cls.properties["Caption"].value == "Heartbeat", heartbeat_cls.properties["Caption"]
    shutdown_cls = conn.GetClass("Msvm_ShutdownComponent", LocalOnly=False)
    assert set(shutdown_cls.methods["InitiateShutdown"].parameters) == {"Force", "Reason"}
    assert "InitiateReboot" in shutdown_cls.methods

    # A VM whose agent never answered: No Contact, no items, and at once.
    gone = common.vm_system(conn, gone_name)
    heartbeat = component(conn, gone, "Msvm_HeartbeatComponent")
    assert list(heartbeat["OperationalStatus"]) == [12], heartbeat.tomof()
    assert list(heartbeat["StatusDescriptions"]) == ["No Contact"], heartbeat.tomof()
    assert heartbeat["Status"] == "No Contact"
    gone_kvp = component(conn, gone, "Msvm_KvpExchangeComponent")
    assert gone_kvp["GuestExchangeItems"] is None, gone_kvp.tomof()

    # One object per service and VM under Msvm_GuestService.
    services = conn.EnumerateInstanceNames("Msvm_GuestService")
    keys = [(s["SystemName"], s["Name"]) for s in services]
    assert len(keys) == len(set(keys)) == 18, services
    print("devices ok")


def shutdown(conn, method, vm_name, force, reason):
    vm = common.vm_system(conn, vm_name)
    c = component(conn, vm, "Msvm_ShutdownComponent")
    rv, out = conn.InvokeMethod(method, c.path, Force=force == "true", Reason=reason)
    assert out == {} or not out, out
    print(int(rv))


def errors(conn, vm_name, gone_name):
    e = common.expect_cim_error
    vm = common.vm_system(conn, vm_name)
    c = component(conn, vm, "Msvm_ShutdownComponent")
    err = e(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "InitiateShutdown", c.path,
            Force="yes", Reason="x")
    assert "Force must be a boolean" in str(err), err
    e(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "InitiateShutdown", c.path,
      Force=pywbem.Uint16(1))
    e(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "InitiateShutdown", c.path,
      Bogus=True)
    unknown = c.path.copy()
    unknown["SystemName"] = "00000000-0000-0000-0000-000000000000"
    unknown["DeviceID"] = "Microsoft:00000000-0000-0000-0000-000000000000\\x"
    err = e(pywbem.CIM_ERR_NOT_FOUND, conn.InvokeMethod, "InitiateShutdown", unknown, Force=False)
    assert "no instance Msvm_ShutdownComponent" in str(err), err
    unknown_vm = vm.path.copy()
    unknown_vm["Name"] = "00000000-0000-0000-0000-000000000000"
    e(pywbem.CIM_ERR_NOT_FOUND, conn.Associators, unknown_vm, AssocClass="Msvm_SystemDevice")
    e(pywbem.CIM_ERR_METHOD_NOT_AVAILABLE, conn.InvokeMethod, "InitiateShutdown",
      "Msvm_ShutdownComponent")
    heartbeat = component(conn, vm, "Msvm_HeartbeatComponent")
    e(pywbem.CIM_ERR_METHOD_NOT_FOUND, conn.InvokeMethod, "InitiateShutdown", heartbeat.path)

    # Hyper-V's return codes: an agent that cannot be reached (32777), a
    # reason over the limit (32773), a disabled component (32775).
    gone = component(conn, common.vm_system(conn, gone_name), "Msvm_ShutdownComponent")
    rv, _ = conn.InvokeMethod("InitiateShutdown", gone.path, Force=False, Reason="x")
    assert rv == 32777, rv
    rv, _ = conn.InvokeMethod("InitiateShutdown", c.path, Force=False, Reason="r" * 5000)
    assert rv == 32773, rv
    rv, _ = conn.InvokeMethod("RequestStateChange", c.path, RequestedState=pywbem.Uint16(3))
    assert rv == 0, rv
    assert conn.GetInstance(c.path)["EnabledState"] == 3
    rv, _ = conn.InvokeMethod("InitiateShutdown", c.path, Force=True, Reason="x")
    assert rv == 32775, rv
    rv, _ = conn.InvokeMethod("RequestStateChange", c.path, RequestedState=pywbem.Uint16(2))
    assert rv == 0 and conn.GetInstance(c.path)["EnabledState"] == 2, rv
    print("errors ok")


def run(argv):
    url, mode, *rest = argv
    conn = common.connect(url)
    if mode == "devices":
        devices(conn, *rest)
    elif mode == "shutdown":
        shutdown(conn, "InitiateShutdown", *rest)
    elif mode == "reboot":
        shutdown(conn, "InitiateReboot", *rest)
    elif mode == "errors":
        errors(conn, *rest)
    else:
        raise AssertionError(f"unknown mode {mode}")


common.main(run)
