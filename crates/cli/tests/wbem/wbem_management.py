"""Msvm_VirtualSystemManagementService through pywbem, as a Hyper-V script
calls it: find the service on the host (Msvm_HostedService), then change a
VM's host key-value pairs, its guest services and its Guest Service
Interface; and the return codes of RequestStateChange and CopyFilesToGuest.
Arguments: URL MODE ...
  kvp VM OP KEY [VALUE]      AddKvpItems (OP add), ModifyKvpItems (modify) or
                             RemoveKvpItems (remove) of one pair; prints the ReturnValue
  kvp-errors VM              refused calls, each with its code; prints "kvp errors ok"
  policy VM GUID POLICY      ModifyGuestServiceSettings; prints the ReturnValue
  register VM GUID NAME      AddGuestServiceSettings (policy 3 on VM); prints the ReturnValue
  unregister VM GUID         RemoveGuestServiceSettings; prints the ReturnValue
  interface VM STATE         ModifyResourceSettings of the interface; prints the ReturnValue
  copy VM SRC DST            CopyFilesToGuest; prints the ReturnValue
  codes VM SRC               RequestStateChange's and CopyFilesToGuest's codes; prints "codes ok"
  denied VM                  a viewer: every method answers 32769; prints "denied ok"
"""

import pywbem

import wbem_common as common

FILES_GUID = "00004745-facb-11e6-bd58-64006a7986d3"


def management(conn):
    """The host's management service, found as Hyper-V scripts find it."""
    services = conn.EnumerateInstances("Msvm_VirtualSystemManagementService")
    assert len(services) == 1, services
    vsms = services[0]
    assert vsms["Name"] == "vmms" and vsms["SystemCreationClassName"] == "Msvm_ComputerSystem"
    (host,) = [s for s in conn.EnumerateInstances("Msvm_ComputerSystem")
               if s["Caption"] == "Hosting Computer System"]
    (linked,) = conn.AssociatorNames(host.path, AssocClass="Msvm_HostedService",
                                     ResultClass="Msvm_VirtualSystemManagementService")
    assert linked.keybindings == vsms.path.keybindings, linked
    assert vsms["SystemName"] == host["Name"]
    return vsms


def item(name, data="", source=0, classname="Msvm_KvpExchangeDataItem"):
    return pywbem.CIMInstance(classname, properties={
        "Name": name, "Data": data, "Source": pywbem.Uint16(source)})


def kvp_call(conn, vsms, target, op, items):
    method = {"add": "AddKvpItems", "modify": "ModifyKvpItems", "remove": "RemoveKvpItems"}[op]
    rv, out = conn.InvokeMethod(method, vsms.path, TargetSystem=target, DataItems=items)
    assert not out or out.get("Job") is None, out
    return int(rv)


def kvp(conn, vm_name, op, key, value=""):
    vsms = management(conn)
    # Found as Hyper-V scripts find a VM: by its ElementName, in WQL.
    (vm,) = conn.ExecQuery("WQL", "SELECT * FROM Msvm_ComputerSystem "
                                  f"WHERE ElementName = '{vm_name}' AND Caption = 'Virtual Machine'")
    assert vm.path.keybindings == common.vm_system(conn, vm_name).path.keybindings, vm.path
    print(kvp_call(conn, vsms, vm.path, op, [item(key, value)]))


def kvp_errors(conn, vm_name):
    vsms = management(conn)
    vm = common.vm_system(conn, vm_name)
    call = lambda op, items, target=vm.path: kvp_call(conn, vsms, target, op, items)  # noqa: E731
    # Another class than Msvm_KvpExchangeDataItem, keys and values over
    # Hyper-V's limits, a pool the host does not write: Invalid parameter.
    assert call("add", [item("fine", "1"), item("x", "y", classname="Msvm_CopyFileToGuestSettingData")]) == 32773
    assert call("add", [item("fine", "1"), item("k" * 513, "v")]) == 32773
    assert call("add", [item("fine", "1"), item("big", "v" * 2049)]) == 32773
    assert call("add", [item("fine", "1", source=1)]) == 32773
    assert call("add", [item("", "v")]) == 32773
    assert call("add", []) == 32773
    # A TargetSystem that is no VM of this host.
    unknown = vm.path.copy()
    unknown["Name"] = "00000000-0000-0000-0000-000000000000"
    assert call("add", [item("fine", "1")], unknown) == 32773
    # An existing key for AddKvpItems, a missing one for Modify and Remove:
    # Failed, and none of the other items changed.
    assert call("add", [item("fine", "1"), item("color", "red")]) == 32768
    assert call("modify", [item("color", "red"), item("nope", "x")]) == 32768
    assert call("remove", [item("color"), item("nope")]) == 32768
    # Not a parameter of the method: a CIM error, as for every method.
    common.expect_cim_error(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "AddKvpItems",
                            vsms.path, TargetSystem=vm.path, DataItems=[item("a", "b")],
                            Bogus=True)
    print("kvp errors ok")


def service_setting(conn, vm_id, guid):
    (setting,) = [s for s in conn.EnumerateInstances("Msvm_GuestCommunicationServiceSettingData")
                  if s["Name"] == guid and vm_id in s["InstanceID"]]
    return setting


def policy(conn, vm_name, guid, value):
    vsms = management(conn)
    vm_id = common.vm_system(conn, vm_name)["Name"]
    setting = service_setting(conn, vm_id, guid)
    setting["EnabledStatePolicy"] = pywbem.Uint16(int(value))
    rv, out = conn.InvokeMethod("ModifyGuestServiceSettings", vsms.path,
                                GuestServiceSettings=[setting])
    if rv == 0:
        (ref,) = out["ResultingGuestServiceSettings"]
        assert ref["InstanceID"] == setting["InstanceID"], ref
        assert conn.GetInstance(ref)["EnabledStatePolicy"] == int(value)
    print(int(rv))


def register(conn, vm_name, guid, name):
    vsms = management(conn)
    vm = common.vm_system(conn, vm_name)
    setting = pywbem.CIMInstance("Msvm_GuestCommunicationServiceSettingData", properties={
        "Name": guid, "ElementName": name, "EnabledStatePolicy": pywbem.Uint16(3)})
    rv, out = conn.InvokeMethod("AddGuestServiceSettings", vsms.path,
                                AffectedConfiguration=vm.path, GuestServiceSettings=[setting])
    if rv == 0:
        (ref,) = out["ResultingGuestServiceSettings"]
        created = conn.GetInstance(ref)
        assert created["Name"] == guid and created["EnabledStatePolicy"] == 3, created.tomof()
        service = common.service(conn, vm["Name"], guid)
        assert service["ElementName"] == name and service["EnabledState"] == 3, service.tomof()
    print(int(rv))


def unregister(conn, vm_name, guid):
    vsms = management(conn)
    vm_id = common.vm_system(conn, vm_name)["Name"]
    setting = service_setting(conn, vm_id, guid)
    rv, _ = conn.InvokeMethod("RemoveGuestServiceSettings", vsms.path,
                              GuestServiceSettings=[setting.path])
    if rv == 0:
        left = [s for s in conn.EnumerateInstances("Msvm_GuestCommunicationService")
                if s["Name"] == guid]
        assert left == [], left
    print(int(rv))


def interface(conn, vm_name, state):
    vsms = management(conn)
    vm = common.vm_system(conn, vm_name)
    (setting,) = [s for s in conn.EnumerateInstances(
        "Msvm_GuestServiceInterfaceComponentSettingData") if vm["Name"] in s["InstanceID"]]
    setting["EnabledState"] = pywbem.Uint16(int(state))
    rv, out = conn.InvokeMethod("ModifyResourceSettings", vsms.path, ResourceSettings=[setting])
    if rv == 0:
        (ref,) = out["ResultingResourceSettings"]
        assert conn.GetInstance(ref)["EnabledState"] == int(state)
        (gsi,) = conn.Associators(vm.path, AssocClass="Msvm_SystemDevice",
                                  ResultClass="Msvm_GuestServiceInterfaceComponent")
        assert gsi["EnabledState"] == int(state), gsi.tomof()
    print(int(rv))


def copy_settings(src, dst):
    return pywbem.CIMInstance("Msvm_CopyFileToGuestSettingData", properties={
        "SourcePath": src, "DestinationPath": dst,
        "OverwriteExisting": True, "CreateFullPath": False})


def copy(conn, vm_name, src, dst):
    vm_id = common.vm_system(conn, vm_name)["Name"]
    files = common.service(conn, vm_id, FILES_GUID, classname="Msvm_GuestFileService")
    rv, _ = conn.InvokeMethod("CopyFilesToGuest", files.path,
                              CopyFileToGuestSettings=[copy_settings(src, dst)])
    print(int(rv))


def codes(conn, vm_name, src):
    vm_id = common.vm_system(conn, vm_name)["Name"]
    exec_service = common.service(conn, vm_id, common.EXEC_GUID)
    change = lambda state, **kw: int(conn.InvokeMethod(  # noqa: E731
        "RequestStateChange", exec_service.path, RequestedState=pywbem.Uint16(state), **kw)[0])
    # TimeoutPeriod NULL or 0: "no time requirements".
    zero = pywbem.CIMDateTime("00000000000000.000000:000")
    assert change(3, TimeoutPeriod=zero) == 0
    assert common.service(conn, vm_id, common.EXEC_GUID)["RequestedState"] == 3
    assert change(2, TimeoutPeriod=None) == 0
    minute = pywbem.CIMDateTime("00000000000100.000000:000")
    assert change(3, TimeoutPeriod=minute) == 4098
    # Defer (8): the VM's DefaultEnabledStatePolicy decides (enabled here).
    assert change(8) == 0
    deferred = common.service(conn, vm_id, common.EXEC_GUID)
    assert (deferred["RequestedState"], deferred["EnabledState"]) == (8, 2), deferred.tomof()
    assert service_setting(conn, vm_id, common.EXEC_GUID)["EnabledStatePolicy"] == 8
    # A state a guest service does not take: Invalid state (32775).
    for state in (4, 6, 9, 10, 11, 32768):
        assert change(state) == 32775, state
    assert change(2) == 0
    # CopyFilesToGuest: bad setting data is Invalid parameter (32773).
    files = common.service(conn, vm_id, FILES_GUID, classname="Msvm_GuestFileService")
    for bad in [[copy_settings("relative/path", "/tmp/x")],
                [pywbem.CIMInstance("Msvm_KvpExchangeDataItem", properties={"Name": "a"})],
                [copy_settings(src, "")]]:
        rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path, CopyFileToGuestSettings=bad)
        assert rv == 32773 and not out.get("Job"), (bad, rv, out)
    print("codes ok")


def denied(conn, vm_name):
    vsms = management(conn)
    vm = common.vm_system(conn, vm_name)
    rv, _ = conn.InvokeMethod("AddKvpItems", vsms.path, TargetSystem=vm.path,
                              DataItems=[item("viewer", "x")])
    assert rv == 32769, rv
    setting = service_setting(conn, vm["Name"], common.EXEC_GUID)
    setting["EnabledStatePolicy"] = pywbem.Uint16(3)
    rv, _ = conn.InvokeMethod("ModifyGuestServiceSettings", vsms.path,
                              GuestServiceSettings=[setting])
    assert rv == 32769, rv
    exec_service = common.service(conn, vm["Name"], common.EXEC_GUID)
    rv, _ = conn.InvokeMethod("RequestStateChange", exec_service.path,
                              RequestedState=pywbem.Uint16(3))
    assert rv == 32769, rv
    assert common.service(conn, vm["Name"], common.EXEC_GUID)["EnabledState"] == 2
    print("denied ok")


def run(argv):
    url, mode, *rest = argv
    conn = common.connect(url)
    modes = {"kvp": kvp, "kvp-errors": kvp_errors, "policy": policy, "register": register,
             "unregister": unregister, "interface": interface, "copy": copy, "codes": codes,
             "denied": denied}
    if mode not in modes:
        raise AssertionError(f"unknown mode {mode}")
    modes[mode](conn, *rest)


common.main(run)
