"""A VM's setting data through pywbem, walked as a Hyper-V script walks it:
VM -> Msvm_SettingsDefineState -> Msvm_VirtualSystemSettingData ->
Msvm_VirtualSystemSettingDataComponent -> each component's setting data ->
(the Guest Service Interface's) Msvm_GuestServiceInterfaceSettingDataComponent
-> each service's Msvm_GuestCommunicationServiceSettingData, and back.
Arguments: URL MODE ...
  walk VM OTHER_VM   (VM's host pool holds color=blue); prints "settings ok"
  state VM           prints each of VM's setting data as CLASS=EnabledState,
                     and DefaultEnabledStatePolicy, one a line
"""

import xml.etree.ElementTree as ET

import wbem_common as common

SETTINGS = {
    # device class: (setting data class, Caption, Description)
    "Msvm_GuestServiceInterfaceComponent": (
        "Msvm_GuestServiceInterfaceComponentSettingData", "Guest Service Interface",
        "Microsoft Guest Service Interface Setting Data"),
    "Msvm_HeartbeatComponent": (
        "Msvm_HeartbeatComponentSettingData", "Heartbeat",
        "Microsoft Heartbeat Service Setting Data"),
    "Msvm_KvpExchangeComponent": (
        "Msvm_KvpExchangeComponentSettingData", "Key-Value Pair Exchange",
        "Microsoft Key-Value Pair Exchange Service Setting Data"),
    "Msvm_ShutdownComponent": (
        "Msvm_ShutdownComponentSettingData", "Shutdown",
        "Microsoft Shutdown Service Setting Data"),
    "Msvm_TimeSyncComponent": (
        "Msvm_TimeSyncComponentSettingData", "Time Synchronization",
        "Microsoft Time Synchronization Service Setting Data"),
    "Msvm_VssComponent": (
        "Msvm_VssComponentSettingData", "VSS", "Microsoft VSS Service Setting Data"),
}


def host_items(texts):
    """Embedded Msvm_KvpExchangeDataItem texts as {Name: (Data, Source)}."""
    items = {}
    for text in texts:
        root = ET.fromstring(text)
        assert root.get("CLASSNAME") == "Msvm_KvpExchangeDataItem", text
        props = {p.get("NAME"): p.findtext("VALUE") for p in root.iter("PROPERTY")}
        items[props["Name"]] = (props["Data"], int(props["Source"]))
    return items


def one(found, what):
    assert len(found) == 1, f"one {what}: {found}"
    return found[0]


def walk(conn, vm_name, other_name):
    vm = common.vm_system(conn, vm_name)
    vm_id = vm["Name"]
    vssd = one(conn.Associators(vm.path, AssocClass="Msvm_SettingsDefineState",
                                ResultClass="Msvm_VirtualSystemSettingData"), "VSSD")
    assert vssd["InstanceID"] == f"Microsoft:{vm_id}", vssd.tomof()
    assert vssd["ElementName"] == vm_name and vssd["VirtualSystemIdentifier"] == vm_id
    assert vssd["VirtualSystemType"] == "Microsoft:Hyper-V:System:Realized", vssd.tomof()
    assert vssd["Caption"] == "Virtual Machine Settings"
    assert conn.GetInstance(vssd.path)["ElementName"] == vm_name
    back = one(conn.AssociatorNames(vssd.path, AssocClass="Msvm_SettingsDefineState"), "VM")
    assert back.classname == "Msvm_ComputerSystem" and back["Name"] == vm_id, back

    parts = conn.Associators(vssd.path, AssocClass="Msvm_VirtualSystemSettingDataComponent")
    by_class = {p.classname: p for p in parts}
    assert sorted(by_class) == sorted(s for s, _, _ in SETTINGS.values()), parts
    for device_class, (settings_class, caption, description) in SETTINGS.items():
        s = by_class[settings_class]
        device = one(conn.Associators(vm.path, AssocClass="Msvm_SystemDevice",
                                      ResultClass=device_class), device_class)
        assert s["InstanceID"] == device["DeviceID"], (s["InstanceID"], device["DeviceID"])
        assert (s["Caption"], s["ElementName"], s["Description"]) == (caption, caption, description)
        assert s["ResourceType"] == 1 and s["ConsumerVisibility"] == 3, s.tomof()
        assert s["EnabledState"] == device["EnabledState"], (s.tomof(), device.tomof())
        assert s["AutomaticAllocation"] is True and s["VirtualQuantity"] == 1
        # Setting data -> the VM's settings; device <-> its setting data.
        up = one(conn.AssociatorNames(s.path, AssocClass="Msvm_VirtualSystemSettingDataComponent"),
                 "group")
        assert up["InstanceID"] == vssd["InstanceID"], up
        mine = one(conn.Associators(device.path, AssocClass="Msvm_SettingsDefineState"),
                   f"settings of {device_class}")
        assert mine.classname == settings_class and mine["InstanceID"] == s["InstanceID"]
        dev = one(conn.AssociatorNames(s.path, AssocClass="Msvm_SettingsDefineState"), "device")
        assert dev.classname == device_class and dev["DeviceID"] == device["DeviceID"], dev
        assert conn.GetInstance(s.path)["InstanceID"] == s["InstanceID"]

    kvp = by_class["Msvm_KvpExchangeComponentSettingData"]
    items = host_items(kvp["HostExchangeItems"])
    assert items == {"color": ("blue", 0)}, items
    assert list(kvp["HostOnlyItems"]) == [] and kvp["DisableHostKVPItems"] is False
    # WQL escapes a backslash, as WMI's does.
    instance_id = kvp["InstanceID"].replace("\\", "\\\\")
    rows = conn.ExecQuery("WQL", "SELECT HostExchangeItems FROM "
                                 "Msvm_KvpExchangeComponentSettingData WHERE InstanceID = "
                                 f"'{instance_id}'")
    assert host_items(one(rows, "row")["HostExchangeItems"]) == items

    gsi = by_class["Msvm_GuestServiceInterfaceComponentSettingData"]
    assert gsi["DefaultEnabledStatePolicy"] == 2, gsi.tomof()
    policies = conn.Associators(gsi.path,
                                AssocClass="Msvm_GuestServiceInterfaceSettingDataComponent")
    services = [s for s in conn.EnumerateInstances("Msvm_GuestCommunicationService")
                if s["SystemName"] == vm_id]
    assert sorted(p["Name"] for p in policies) == sorted(s["Name"] for s in services), policies
    assert all(p.classname == "Msvm_GuestCommunicationServiceSettingData" for p in policies)
    for p in policies:
        up = one(conn.AssociatorNames(
            p.path, AssocClass="Msvm_GuestServiceInterfaceSettingDataComponent"), "GSI settings")
        assert up["InstanceID"] == gsi["InstanceID"], up
    refs = conn.References(gsi.path, ResultClass="Msvm_GuestServiceInterfaceSettingDataComponent")
    assert len(refs) == len(services), refs
    assert len(conn.References(vssd.path)) == 1 + len(SETTINGS), "VM link + parts"

    # Per VM: the other VM has its own settings and an empty host pool.
    other = common.vm_system(conn, other_name)
    other_vssd = one(conn.Associators(other.path, ResultClass="Msvm_VirtualSystemSettingData"),
                     "other VSSD")
    assert other_vssd["ElementName"] == other_name
    other_kvp = one(conn.Associators(other_vssd.path,
                                     ResultClass="Msvm_KvpExchangeComponentSettingData"),
                    "other kvp settings")
    assert list(other_kvp["HostExchangeItems"]) == [], other_kvp.tomof()
    assert len(conn.EnumerateInstances("Msvm_VirtualSystemSettingData")) == 2
    assert len(conn.EnumerateInstanceNames("CIM_ResourceAllocationSettingData")) == 2 * len(SETTINGS)
    assert len(conn.EnumerateInstanceNames("Msvm_SettingsDefineState")) == 2 * (1 + len(SETTINGS))

    classes(conn)
    print("settings ok")


def classes(conn):
    vssd = conn.GetClass("Msvm_VirtualSystemSettingData", LocalOnly=False)
    assert vssd.superclass == "CIM_VirtualSystemSettingData"
    assert "VirtualSystemIdentifier" in vssd.properties and "InstanceID" in vssd.properties
    for settings_class, _, _ in SETTINGS.values():
        cls = conn.GetClass(settings_class, LocalOnly=False, IncludeQualifiers=True)
        assert cls.superclass == "CIM_ResourceAllocationSettingData", settings_class
        assert cls.properties["InstanceID"].qualifiers["Key"].value is True
        assert "EnabledState" in cls.properties and "ResourceType" in cls.properties
    kvp = conn.GetClass("Msvm_KvpExchangeComponentSettingData", LocalOnly=False,
                        IncludeQualifiers=True)
    items = kvp.properties["HostExchangeItems"]
    assert items.is_array and items.qualifiers["EmbeddedInstance"].value == "Msvm_KvpExchangeDataItem"
    gsi = conn.GetClass("Msvm_GuestServiceInterfaceComponentSettingData", LocalOnly=False)
    assert gsi.properties["EnabledState"].value == 3
    for name, group, part in [
        ("Msvm_SettingsDefineState", "ManagedElement", "SettingData"),
        ("Msvm_VirtualSystemSettingDataComponent", "GroupComponent", "PartComponent"),
        ("Msvm_GuestServiceInterfaceSettingDataComponent", "GroupComponent", "PartComponent"),
    ]:
        cls = conn.GetClass(name, LocalOnly=False, IncludeQualifiers=True)
        assert cls.qualifiers["Association"].value, name
        assert group in cls.properties and part in cls.properties, cls.properties
    part = conn.GetClass("Msvm_VirtualSystemSettingDataComponent", LocalOnly=False)
    assert part.properties["PartComponent"].reference_class == "CIM_ResourceAllocationSettingData"
    gsic = conn.GetClass("Msvm_GuestServiceInterfaceSettingDataComponent", LocalOnly=False)
    assert gsic.properties["GroupComponent"].reference_class == \
        "Msvm_GuestServiceInterfaceComponentSettingData"


def state(conn, vm_name):
    vm = common.vm_system(conn, vm_name)
    vssd = one(conn.Associators(vm.path, ResultClass="Msvm_VirtualSystemSettingData"), "VSSD")
    for s in sorted(conn.Associators(vssd.path), key=lambda s: s.classname):
        if s.classname != "Msvm_ComputerSystem":
            print(f"{s.classname}={s['EnabledState']}")
            if "DefaultEnabledStatePolicy" in s:
                print(f"DefaultEnabledStatePolicy={s['DefaultEnabledStatePolicy']}")


def run(argv):
    url, mode, *rest = argv
    conn = common.connect(url)
    if mode == "walk":
        walk(conn, *rest)
    elif mode == "state":
        state(conn, *rest)
    else:
        raise AssertionError(f"unknown mode {mode}")


common.main(run)
