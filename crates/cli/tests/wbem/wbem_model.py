"""Enumerates guestcomm's CIM model with pywbem: the services of a VM and
their properties, classes, the Msvm_RegisteredGuestService association from
the VM's interface component, and a WQL query.
Arguments: URL VM_NAME"""

import re

import pywbem

import wbem_common as common
from wbem_common import EXEC_GUID


def run(argv):
    url, vm_name = argv
    conn = common.connect(url)
    vm = common.vm_system(conn, vm_name)
    vm_id = vm["Name"]
    assert re.fullmatch(r"[0-9a-f-]{36}", vm_id), vm_id
    hosts = [s for s in conn.EnumerateInstances("Msvm_ComputerSystem")
             if s["Caption"] == "Hosting Computer System"]
    assert len(hosts) == 1, hosts

    services = conn.EnumerateInstances("Msvm_GuestCommunicationService")
    assert len(services) == 9, f"the nine built-in services: {[s['ElementName'] for s in services]}"
    for s in services:
        assert s.classname == "Msvm_GuestCommunicationService"
        assert s["CreationClassName"] == "Msvm_GuestCommunicationService"
        assert s["SystemCreationClassName"] == "Msvm_ComputerSystem"
        assert s["SystemName"] == vm_id
        assert re.fullmatch(r"0000474[3-9a-b]-facb-11e6-bd58-64006a7986d3", s["Name"]), s["Name"]
        assert s["Caption"] == s["ElementName"] and s["ElementName"].startswith("guestcomm ")
        assert s["EnabledState"] == 2 and s["RequestedState"] == 8, s.tomof()
        assert s["Started"] is True and s["StartMode"] == "Automatic"
        assert s["Status"] in ("OK", "No Contact", "Lost Comm"), s["Status"]
        assert re.fullmatch(r"\d{14}\.\d{6}\+000", str(s["InstallDate"])), s["InstallDate"]
        assert sorted(s.path.keybindings.keys()) == sorted(
            ["CreationClassName", "Name", "SystemCreationClassName", "SystemName"]), s.path
        again = conn.GetInstance(s.path)
        assert again["ElementName"] == s["ElementName"]
        # RequestStateChange sets its policy: Enabled, Disabled, Deferred.
        assert list(s["AvailableRequestedStates"]) == [2, 3, 8], s.tomof()
    exec_service = common.service(conn, vm_id, EXEC_GUID)
    assert exec_service["ElementName"] == "guestcomm Command Execution"

    # One object per service and VM: a built-in integration service as its
    # own class (Msvm_GuestFileService, Guestcomm_*), agent and exec as
    # Msvm_GuestCommunicationService.
    names = conn.EnumerateInstanceNames("Msvm_GuestService")
    assert len(names) == 9, f"one object per service: {names}"
    assert sorted(n["Name"] for n in names) == sorted(s["Name"] for s in services), names
    assert sorted(n.classname for n in names if n.classname.startswith("Guestcomm_")) == [
        "Guestcomm_FsFreezeService", "Guestcomm_GuestInfoService", "Guestcomm_HeartbeatService",
        "Guestcomm_KvpExchangeService", "Guestcomm_ShutdownService", "Guestcomm_TimeSyncService"]
    files = conn.EnumerateInstances("Msvm_GuestFileService")
    assert len(files) == 1 and files[0]["Name"] == "00004745-facb-11e6-bd58-64006a7986d3"
    only = conn.EnumerateInstances("Msvm_GuestCommunicationService", PropertyList=["Name"])
    assert list(only[0].properties.keys()) == ["Name"], only[0].properties.keys()

    policies = conn.EnumerateInstances("Msvm_GuestCommunicationServiceSettingData")
    assert sorted(p["Name"] for p in policies) == sorted(s["Name"] for s in services)
    assert all(p["EnabledStatePolicy"] == 8 for p in policies), policies
    assert conn.GetInstance(policies[0].path)["InstanceID"] == policies[0]["InstanceID"]
    (gsi,) = conn.EnumerateInstances("Msvm_GuestServiceInterfaceComponentSettingData")
    assert (gsi["EnabledState"], gsi["DefaultEnabledStatePolicy"]) == (2, 2), gsi.tomof()
    assert vm_id in gsi["InstanceID"]

    cls = conn.GetClass("Msvm_GuestCommunicationService", LocalOnly=False,
                        IncludeQualifiers=True, IncludeClassOrigin=True)
    assert cls.superclass == "Msvm_GuestService"
    assert cls.properties["Started"].class_origin == "CIM_Service"
    assert cls.properties["Name"].qualifiers["Key"].value is True
    assert "RequestStateChange" in cls.methods
    # The qualifiers a Hyper-V script relies on, as pywbem reads them.
    enabled = cls.properties["EnabledState"]
    states = dict(zip(enabled.qualifiers["ValueMap"].value, enabled.qualifiers["Values"].value))
    assert (states["2"], states["3"]) == ("Enabled", "Disabled"), states
    assert enabled.value == 5, enabled
    assert cls.properties["RequestedState"].value == 12
    assert cls.properties["Name"].qualifiers["Override"].value == "Name"
    assert cls.properties["Caption"].qualifiers["MaxLen"].value == 64
    change = cls.methods["RequestStateChange"]
    assert "32775" in change.qualifiers["ValueMap"].value
    assert "8" in change.parameters["RequestedState"].qualifiers["ValueMap"].value
    copy = conn.GetClass("Msvm_GuestFileService", LocalOnly=True)
    assert list(copy.methods.keys()) == ["CopyFilesToGuest"], copy.methods.keys()
    settings = copy.methods["CopyFilesToGuest"].parameters["CopyFileToGuestSettings"]
    assert settings.qualifiers["EmbeddedInstance"].value == "Msvm_CopyFileToGuestSettingData"
    job = conn.GetClass("Msvm_CopyFileToGuestJob", LocalOnly=False)
    job_states = dict(zip(job.properties["JobState"].qualifiers["ValueMap"].value,
                          job.properties["JobState"].qualifiers["Values"].value))
    assert job_states["7"] == "Completed", job_states
    policy = conn.GetClass("Msvm_GuestServiceInterfaceComponentSettingData", LocalOnly=False)
    assert policy.properties["EnabledState"].value == 3
    assert policy.properties["DefaultEnabledStatePolicy"].value == 2
    all_names = conn.EnumerateClassNames(DeepInheritance=True)
    for c in ["Msvm_RegisteredGuestService", "Msvm_CopyFileToGuestJob",
              "Msvm_CopyFileToGuestSettingData", "Msvm_GuestServiceInterfaceComponent"]:
        assert c in all_names, c
    subclasses = conn.EnumerateClasses(ClassName="Msvm_GuestService")
    assert "Msvm_GuestFileService" in [c.classname for c in subclasses]

    interfaces = conn.EnumerateInstanceNames("Msvm_GuestServiceInterfaceComponent")
    assert len(interfaces) == 1 and interfaces[0]["SystemName"] == vm_id
    component = interfaces[0]
    linked = conn.Associators(component, AssocClass="Msvm_RegisteredGuestService",
                              ResultClass="Msvm_GuestCommunicationService", Role="Antecedent",
                              ResultRole="Dependent")
    assert sorted(s["Name"] for s in linked) == sorted(s["Name"] for s in services)
    everything = conn.AssociatorNames(component, AssocClass="Msvm_RegisteredGuestService")
    assert len(everything) == 9, everything
    refs = conn.References(component, ResultClass="Msvm_RegisteredGuestService")
    assert len(refs) == 9
    for r in refs:
        assert r["Antecedent"] == component.copy() or r["Antecedent"].keybindings == component.keybindings
    assert conn.References(component, Role="Dependent") == []
    link = conn.GetInstance(refs[0].path)
    assert link.classname == "Msvm_RegisteredGuestService"
    assert link["Dependent"].keybindings == refs[0]["Dependent"].keybindings
    back = conn.AssociatorNames(exec_service.path, AssocClass="Msvm_RegisteredGuestService")
    assert len(back) == 1 and back[0].classname == "Msvm_GuestServiceInterfaceComponent", back
    assert len(conn.ReferenceNames(exec_service.path)) == 1

    rows = conn.ExecQuery(
        "WQL",
        "SELECT Name, EnabledState FROM Msvm_GuestCommunicationService "
        "WHERE (ElementName = 'guestcomm Command Execution' OR ElementName = 'guestcomm File Copy') "
        "AND EnabledState = 2 AND NOT Started = FALSE")
    assert sorted(r["Name"] for r in rows) == [EXEC_GUID, "00004745-facb-11e6-bd58-64006a7986d3"], rows
    assert sorted(rows[0].properties.keys()) == ["EnabledState", "Name"]
    assert rows[0].path.classname == "Msvm_GuestCommunicationService"
    assert conn.ExecQuery("WQL", "SELECT * FROM Msvm_ComputerSystem WHERE Name = 'nothing'") == []
    (vsms,) = conn.EnumerateInstances("Msvm_VirtualSystemManagementService")
    assert list(vsms["AvailableRequestedStates"]) == [] and list(vsms["OperationalStatus"]) == [2]
    class_level(conn)
    print("model ok")


def class_level(conn):
    """Associators and References of a class (DSP0200): classes, from the
    schema, with class paths."""
    found = conn.Associators("Msvm_ComputerSystem", AssocClass="Msvm_SystemDevice")
    assert [c.classname for _, c in found] == ["CIM_LogicalDevice"], found
    path, cls = found[0]
    assert isinstance(cls, pywbem.CIMClass) and path.classname == "CIM_LogicalDevice", path
    assert path.namespace == common.NAMESPACE, path
    names = conn.AssociatorNames("Msvm_ComputerSystem", AssocClass="Msvm_SystemDevice",
                                 ResultClass="Msvm_HeartbeatComponent")
    assert [n.classname for n in names] == ["Msvm_HeartbeatComponent"], names
    assert isinstance(names[0], pywbem.CIMClassName), names
    back = conn.AssociatorNames("Msvm_KvpExchangeComponent", AssocClass="Msvm_SystemDevice")
    assert [n.classname for n in back] == ["CIM_System"], back
    assert conn.AssociatorNames("Msvm_ComputerSystem", AssocClass="Msvm_SystemDevice",
                                Role="PartComponent") == []
    refs = [n.classname for n in conn.ReferenceNames("Msvm_GuestServiceInterfaceComponent")]
    assert "Msvm_RegisteredGuestService" in refs and "Msvm_SystemDevice" in refs, refs
    (_, registered), = conn.References("Msvm_GuestCommunicationService",
                                       ResultClass="Msvm_RegisteredGuestService")
    assert registered.classname == "Msvm_RegisteredGuestService", registered
    assert registered.properties["Dependent"].reference_class == "Msvm_GuestService", registered
    common.expect_cim_error(pywbem.CIM_ERR_INVALID_CLASS, conn.AssociatorNames, "No_SuchClass")


common.main(run)
