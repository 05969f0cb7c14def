"""CopyFilesToGuest through pywbem: a job that copies SRC to DST in the
guest of VM_NAME, polled with GetInstance until it ends; then a copy that
fails (its destination directory is missing) ends its job with an error.
Arguments: URL VM_NAME SRC DST MISSING_DST"""

import time
import xml.etree.ElementTree as ET

import pywbem

import wbem_common as common


def settings(src, dst, overwrite=False, full_path=False):
    return pywbem.CIMInstance("Msvm_CopyFileToGuestSettingData", properties={
        "SourcePath": src, "DestinationPath": dst,
        "OverwriteExisting": overwrite, "CreateFullPath": full_path})


def wait(conn, job_path):
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        job = conn.GetInstance(job_path)
        seen.append(int(job["PercentComplete"]))
        assert job["JobState"] in (2, 3, 4, 7, 10), job["JobState"]
        if job["JobState"] in (7, 10):
            assert seen == sorted(seen), f"PercentComplete went back: {seen}"
            return job
        time.sleep(0.05)
    raise AssertionError(f"the job did not end: {seen}")


def run(argv):
    url, vm_name, src, dst, missing = argv
    conn = common.connect(url)
    vm_id = common.vm_system(conn, vm_name)["Name"]
    files = common.service(conn, vm_id, "00004745-facb-11e6-bd58-64006a7986d3",
                           classname="Msvm_GuestFileService")
    rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path,
                                CopyFileToGuestSettings=[settings(src, dst)])
    assert rv == 4096, rv
    job_path = out["Job"]
    assert job_path.classname == "Msvm_CopyFileToGuestJob", job_path
    job = wait(conn, job_path)
    assert job["JobState"] == 7, job.tomof()
    assert job["PercentComplete"] == 100 and job["ErrorDescription"] is None
    assert job["VirtualSystemName"] == vm_id
    assert job["ElapsedTime"].is_interval and job["StartTime"] == job["TimeSubmitted"], job.tomof()
    assert job["TimeSubmitted"].datetime <= job["TimeOfLastStateChange"].datetime, job.tomof()
    assert "SourcePath" in job["CopyFileToGuestSettingData"][0]
    jobs = conn.EnumerateInstanceNames("CIM_ConcreteJob")
    assert job_path.keybindings in [j.keybindings for j in jobs], jobs

    rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path,
                                CopyFileToGuestSettings=[settings(src, missing)])
    assert rv == 4096
    failed = wait(conn, out["Job"])
    assert failed["JobState"] == 10, failed.tomof()
    assert failed["ErrorDescription"], failed.tomof()
    # GetError and GetErrorEx: the failure as CIM_Error, embedded CIM-XML.
    rv, got = conn.InvokeMethod("GetError", out["Job"])
    error = ET.fromstring(got["Error"])
    assert rv == 0 and error.get("CLASSNAME") == "CIM_Error", got
    props = {p.get("NAME"): p.findtext("VALUE") for p in error.iter("PROPERTY")}
    assert props["Message"] == failed["ErrorDescription"], props
    assert props["CIMStatusCode"] == "1" and props["ErrorSource"] == out["Job"]["InstanceID"], props
    rv, got = conn.InvokeMethod("GetErrorEx", out["Job"])
    assert rv == 0 and len(got["Errors"]) == 1 and "CIM_Error" in got["Errors"][0], got
    rv, got = conn.InvokeMethod("GetError", job_path)
    assert rv == 0 and got.get("Error") is None, got
    rv, got = conn.InvokeMethod("GetErrorEx", job_path)
    assert rv == 0 and not got.get("Errors"), got
    print(f"failed: {failed['ErrorDescription']}")

    # The same destination again, without OverwriteExisting: refused by the guest.
    rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path,
                                CopyFileToGuestSettings=[settings(src, dst)])
    exists = wait(conn, out["Job"])
    assert exists["JobState"] == 10, exists.tomof()
    rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path,
                                CopyFileToGuestSettings=[settings(src, dst, overwrite=True)])
    assert wait(conn, out["Job"])["JobState"] == 7

    # Parameters that are not setting data: Invalid parameter (32773), no job.
    for bad in [{}, {"CopyFileToGuestSettings": [pywbem.CIMInstance(
                    "Msvm_ComputerSystem", properties={"Name": "x"})]},
                {"CopyFileToGuestSettings": [settings("relative/path", dst)]}]:
        rv, out = conn.InvokeMethod("CopyFilesToGuest", files.path, **bad)
        assert rv == 32773 and not out.get("Job"), (bad, rv, out)
    print("copy ok")


common.main(run)
