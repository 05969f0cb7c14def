"""Bad requests through pywbem and raw HTTP: each gets the standard CIM
status (or DSP0200's HTTP refusal with a CIMError header) and the daemon
keeps serving. Arguments: URL VM_NAME ROLE (the listener's --wbem-role)"""

import http.client
import urllib.parse

import pywbem

import wbem_common as common
from wbem_common import EXEC_GUID


def raw(url, body, headers=None, chunked=False):
    """POSTs body to /cimom as a CIM client would (chunked: without a
    Content-Length); (status, CIMError, text)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Content-Type": 'application/xml; charset="utf-8"', "CIMOperation": "MethodCall",
         "CIMMethod": "EnumerateInstances", "CIMObject": common.NAMESPACE}
    h.update(headers or {})
    try:
        if chunked:
            pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
            conn.request("POST", "/cimom", body=iter(pieces), headers=h, encode_chunked=True)
        else:
            conn.request("POST", "/cimom", body=body, headers=h)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the whole body was sent: the answer is there
    r = conn.getresponse()
    answer = (r.status, r.getheader("CIMError"), r.read().decode(errors="replace"))
    conn.close()
    return answer


ENUMERATE = ('<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0">'
             '<MESSAGE ID="7" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="EnumerateInstanceNames">'
             '<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="virtualization"/>'
             '<NAMESPACE NAME="v2"/></LOCALNAMESPACEPATH><IPARAMVALUE NAME="ClassName">'
             '<CLASSNAME NAME="Msvm_ComputerSystem"/></IPARAMVALUE></IMETHODCALL></SIMPLEREQ>'
             '</MESSAGE></CIM>')


def still_serving(conn):
    assert len(conn.EnumerateInstanceNames("Msvm_ComputerSystem")) == 2


def run(argv):
    url, vm_name, role = argv
    conn = common.connect(url)
    e = common.expect_cim_error
    vm_id = common.vm_system(conn, vm_name)["Name"]
    exec_path = common.service(conn, vm_id, EXEC_GUID).path

    e(pywbem.CIM_ERR_INVALID_CLASS, conn.EnumerateInstances, "Msvm_NoSuchClass")
    e(pywbem.CIM_ERR_INVALID_CLASS, conn.GetClass, "Msvm_NoSuchClass")
    e(pywbem.CIM_ERR_INVALID_NAMESPACE, conn.EnumerateInstances, "Msvm_ComputerSystem",
      namespace="root/cimv2")
    missing = exec_path.copy()
    missing["SystemName"] = "00000000-0000-0000-0000-000000000000"
    e(pywbem.CIM_ERR_NOT_FOUND, conn.GetInstance, missing)
    e(pywbem.CIM_ERR_NOT_FOUND, conn.Associators, missing)
    e(pywbem.CIM_ERR_INVALID_QUERY, conn.ExecQuery, "WQL", "SELECT * FROM")
    e(pywbem.CIM_ERR_INVALID_QUERY, conn.ExecQuery, "WQL",
      "SELECT * FROM Msvm_ComputerSystem WHERE Bogus = 1")
    e(pywbem.CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED, conn.ExecQuery, "DMTF:CQL",
      "SELECT * FROM Msvm_ComputerSystem")
    e(pywbem.CIM_ERR_NOT_SUPPORTED, conn.DeleteInstance, exec_path)
    e(pywbem.CIM_ERR_NOT_SUPPORTED, conn.CreateInstance,
      pywbem.CIMInstance("Msvm_ComputerSystem", properties={"Name": "x"}))
    e(pywbem.CIM_ERR_METHOD_NOT_FOUND, conn.InvokeMethod, "Reboot", exec_path)
    e(pywbem.CIM_ERR_METHOD_NOT_AVAILABLE, conn.InvokeMethod, "StartService",
      "Msvm_GuestCommunicationService")
    if role == "admin":
        e(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "RequestStateChange", exec_path)
        e(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "RequestStateChange", exec_path,
          RequestedState="enabled")
        e(pywbem.CIM_ERR_INVALID_PARAMETER, conn.InvokeMethod, "RequestStateChange", exec_path,
          RequestedState=pywbem.Uint16(2), Bogus=pywbem.Uint16(1))
        rv, _ = conn.InvokeMethod("RequestStateChange", exec_path, RequestedState=pywbem.Uint16(11))
        assert rv == 32775, f"Reset is not a state of a guest service: {rv}"
        rv, _ = conn.InvokeMethod("StopService", exec_path)
        assert rv == 1, rv
    else:
        rv, _ = conn.InvokeMethod("RequestStateChange", exec_path, RequestedState=pywbem.Uint16(3))
        assert rv == 32769, f"Access Denied, as Hyper-V answers: {rv}"
        assert common.service(conn, vm_id, EXEC_GUID)["EnabledState"] == 2
    still_serving(conn)

    # Raw HTTP: what pywbem would never send.
    for body, status, header in [
        (b"<CIM><MESSAGE", 400, "request-not-well-formed"),
        (b"not xml at all", 400, "request-not-valid"),
        (ENUMERATE.replace("SIMPLEREQ", "MULTIREQ").encode(), 400, "request-not-valid"),
        (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
         b'"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><CIM>&lol2;</CIM>', 400,
         "request-not-valid"),
        (b"<CIM>&lol;</CIM>", 400, "request-not-well-formed"),
        (("<a>" * 1000 + "</a>" * 1000).encode(), 400, "request-not-valid"),
        (b"<CIM>" + b" " * (2 * 1024 * 1024) + b"</CIM>", 413, "request-not-valid"),
    ]:
        got = raw(url, body)
        assert got[:2] == (status, header), f"{body[:40]!r}: {got}"
        still_serving(conn)
    big = b"<CIM>" + b" " * (2 * 1024 * 1024) + b"</CIM>"
    assert raw(url, big, chunked=True)[:2] == (413, "request-not-valid")
    still_serving(conn)
    status, header, text = raw(url, ENUMERATE)
    assert status == 200 and header is None and "VALUE.NAMEDINSTANCE" not in text, text
    assert 'MESSAGE ID="7"' in text and "INSTANCENAME" in text, text
    print("errors ok")


common.main(run)
