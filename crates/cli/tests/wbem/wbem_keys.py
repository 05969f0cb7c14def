"""Key values as WMI compares them, through pywbem: a VM's GUID written in
upper case or in braces names the same VM, component and setting data, and
does as a method's TargetSystem; an unknown GUID is still unknown.
Arguments: URL VM; prints "keys ok"."""

import pywbem

import wbem_common as common

UNKNOWN = "{0000000A-0000-0000-0000-000000000000}"


def forms(guid):
    """guid as a client may write it: upper case, braced, both."""
    return [guid.upper(), "{" + guid + "}", "{" + guid.upper() + "}"]


def spelled(path, key, old, new):
    """path with `old` written `new` in key `key`."""
    other = path.copy()
    other[key] = path[key].replace(old, new)
    return other


def add_item(conn, target, name):
    """AddKvpItems of one host pair name=1 on target; the ReturnValue."""
    (vsms,) = conn.EnumerateInstanceNames("Msvm_VirtualSystemManagementService")
    item = pywbem.CIMInstance("Msvm_KvpExchangeDataItem", properties={
        "Name": name, "Data": "1", "Source": pywbem.Uint16(0)})
    rv, _ = conn.InvokeMethod("AddKvpItems", vsms, TargetSystem=target, DataItems=[item])
    return int(rv)


def keys(conn, vm_name):
    vm = common.vm_system(conn, vm_name)
    vm_id = vm["Name"]
    (kvp,) = conn.Associators(vm.path, AssocClass="Msvm_SystemDevice",
                              ResultClass="Msvm_KvpExchangeComponent")
    (vssd,) = conn.Associators(vm.path, AssocClass="Msvm_SettingsDefineState")
    (kvp_settings,) = conn.Associators(kvp.path, AssocClass="Msvm_SettingsDefineState")
    for form in forms(vm_id):
        got = conn.GetInstance(spelled(vm.path, "Name", vm_id, form))
        assert got["Name"] == vm_id and got["ElementName"] == vm_name, got.tomof()
        device = spelled(spelled(kvp.path, "SystemName", vm_id, form), "DeviceID", vm_id, form)
        assert conn.GetInstance(device)["DeviceID"] == kvp["DeviceID"], form
        for setting in (vssd, kvp_settings):
            got = conn.GetInstance(spelled(setting.path, "InstanceID", vm_id, form))
            assert got["InstanceID"] == setting["InstanceID"], (form, got.tomof())
        # The associations start from a name in any form too.
        linked = conn.AssociatorNames(spelled(vm.path, "Name", vm_id, form),
                                      AssocClass="Msvm_SystemDevice")
        assert len(linked) == 6, linked
    # A method's target and reference parameters.
    target = spelled(vm.path, "Name", vm_id, "{" + vm_id.upper() + "}")
    assert add_item(conn, target, "braced") == 0
    host = conn.GetInstance(spelled(kvp_settings.path, "InstanceID", vm_id, vm_id.upper()))
    assert any("braced" in t for t in host["HostExchangeItems"]), host.tomof()
    # An unknown GUID, in any form: not found, and nothing changed.
    unknown = spelled(vm.path, "Name", vm_id, UNKNOWN)
    common.expect_cim_error(pywbem.CIM_ERR_NOT_FOUND, conn.GetInstance, unknown)
    common.expect_cim_error(pywbem.CIM_ERR_NOT_FOUND, conn.GetInstance,
                            spelled(vssd.path, "InstanceID", vm_id, UNKNOWN))
    assert add_item(conn, unknown, "lost") == 32773
    host = conn.GetInstance(kvp_settings.path)
    assert not any("lost" in t for t in host["HostExchangeItems"]), host.tomof()
    print("keys ok")


common.main(lambda argv: keys(common.connect(argv[0]), argv[1]))
