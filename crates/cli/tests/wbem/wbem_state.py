"""RequestStateChange through pywbem on the Exec service of a VM.
Arguments: URL VM_NAME STATE; prints the ReturnValue and the EnabledState after."""

import pywbem

import wbem_common as common
from wbem_common import EXEC_GUID


def run(argv):
    url, vm_name, state = argv
    conn = common.connect(url)
    vm_id = common.vm_system(conn, vm_name)["Name"]
    exec_service = common.service(conn, vm_id, EXEC_GUID)
    rv, out = conn.InvokeMethod("RequestStateChange", exec_service.path,
                                RequestedState=pywbem.Uint16(int(state)))
    after = conn.GetInstance(exec_service.path)
    print(f"{int(rv)} {after['EnabledState']}")


common.main(run)
