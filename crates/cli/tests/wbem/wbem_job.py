"""Msvm_CopyFileToGuestJob as Hyper-V's, through pywbem: a failed job's
ErrorDescription and CIM_Error in Microsoft's words (Win32 text and
HRESULT), RequestStateChange on the job (Terminate and Kill of a running
job; Invalid State Transition once it has ended), DeleteOnCompletion and
TimeBeforeRemoval. A running job is held by stopping the agent (SIGSTOP)
while the job connects to it.
Arguments: URL VM SRC DIR AGENT_PID FULL_DIR; DIR/exists.bin exists, FULL_DIR
is on a filesystem too small for SRC ("-": none). Prints "job ok"."""

import os
import signal
import time
import xml.etree.ElementTree as ET

import pywbem

import wbem_common as common

FILES_GUID = "00004745-facb-11e6-bd58-64006a7986d3"


def settings(src, dst):
    return pywbem.CIMInstance("Msvm_CopyFileToGuestSettingData", properties={
        "SourcePath": src, "DestinationPath": dst,
        "OverwriteExisting": False, "CreateFullPath": False})


def copy(conn, files, src, dst):
    rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path,
                                CopyFileToGuestSettings=[settings(src, dst)])
    assert rv == 4096, rv
    return out["Job"]


def wait(conn, job, states):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = conn.GetInstance(job)
        if got["JobState"] in states:
            return got
        time.sleep(0.02)
    raise AssertionError(f"job {job} never reached {states}")


def change(conn, job, requested):
    rv, _ = conn.InvokeMethod("RequestStateChange", job, RequestedState=pywbem.Uint16(requested))
    return int(rv)


def failed(conn, files, src, dst, text, hresult):
    job = copy(conn, files, src, dst)
    got = wait(conn, job, (7, 8, 9, 10))
    assert got["JobState"] == 10, got.tomof()
    description = got["ErrorDescription"]
    assert description.endswith(f"{text} ({hresult})"), description
    assert f"'{src}'" in description and f"'{dst}'" in description, description
    assert "--" not in description, description
    rv, out = conn.InvokeMethod("GetError", job)
    error = ET.fromstring(out["Error"])
    props = {p.get("NAME"): p.findtext("VALUE") for p in error.iter("PROPERTY")}
    assert rv == 0 and props["Message"] == description, props
    assert props["MessageID"] == hresult, props
    return job, got


def run(argv):
    url, vm_name, src, dir_, agent_pid, full_dir = argv
    conn = common.connect(url)
    vm_id = common.vm_system(conn, vm_name)["Name"]
    files = common.service(conn, vm_id, FILES_GUID, classname="Msvm_GuestFileService")
    exists = os.path.join(dir_, "exists.bin")
    job, got = failed(conn, files, src, exists, "The file exists.", "0x80070050")
    failed(conn, files, os.path.join(dir_, "nothing.bin"), os.path.join(dir_, "n.bin"),
           "The system cannot find the file specified.", "0x80070002")
    failed(conn, files, src, os.path.join(dir_, "no", "such", "x.bin"),
           "The system cannot find the path specified.", "0x80070003")
    if full_dir != "-":
        failed(conn, files, src, os.path.join(full_dir, "big.bin"),
               "There is not enough space on the disk.", "0x80070070")

    # An ended job: kept (DeleteOnCompletion FALSE), no longer cancellable;
    # Terminate is an Invalid State Transition, Start is Not Supported.
    assert got["DeleteOnCompletion"] is False and got["Cancellable"] is False, got.tomof()
    assert got["TimeBeforeRemoval"].is_interval, got.tomof()
    assert change(conn, job, 4) == 4097
    assert change(conn, job, 5) == 4097
    assert change(conn, job, 2) == 1
    assert conn.GetInstance(job)["JobState"] == 10

    # A running job, terminated, then one killed: the copy stops.
    pid = int(agent_pid)
    for requested, final, name in [(4, 8, "terminated.bin"), (5, 9, "killed.bin")]:
        os.kill(pid, signal.SIGSTOP)
        try:
            job = copy(conn, files, src, os.path.join(dir_, name))
            running = wait(conn, job, (4, 7, 8, 9, 10))
            assert running["JobState"] == 4 and running["Cancellable"] is True, running.tomof()
            assert change(conn, job, 3) == 1
            assert change(conn, job, requested) == 0
            stopped = conn.GetInstance(job)
            assert stopped["JobState"] == final and stopped["ErrorDescription"] is None, stopped.tomof()
            assert change(conn, job, requested) == 4097
        finally:
            os.kill(pid, signal.SIGCONT)
        # It stays so once the task has dropped the copy.
        assert conn.GetInstance(job)["JobState"] == final
    print("job ok")


common.main(run)
