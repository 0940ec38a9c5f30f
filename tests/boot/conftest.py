"""Boot tier: host-side tests that boot the Proxmox-like lab machine through ``lab/pvelab``
(helper: tests/boot/pvelab.py). Every test here is marked ``boot``; they need root, qemu and OVMF
(lab/setup-host) and FAIL, never skip, when those are missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


# VM minutes of each boot test, measured in one run of ./run-tests on the 2-core host (two
# 1-vCPU VMs side by side; see the closing notes). Two uses: the tests are handed to the two
# pytest-xdist workers longest first (the last test to start then is a short one, so both
# VM slots stay busy until the end), and the ones in LONG are left out of ./run-tests unless
# it is given --long, to keep the whole run within CI's 90 minutes on such a machine.
VM_MINUTES: dict[str, float] = {  # ~2 minutes a boot under TCG, two VMs on two cores
    "test_trial_that_hangs_is_reset_by_the_watchdog_and_falls_back": 20,
    "test_grub_a_b_c_d_e_f_on_the_legacy_bios_machine": 12,
    "test_trial_broken_initrd_falls_back_and_power_loss_consumes_a_try": 10,
    "test_room_kernel_update_and_initramfs_update_succeed_on_full_size_esps": 10,
    "test_trial_check_fails_falls_back_then_good_trial_becomes_default": 10,
    "test_trial_waits_for_a_held_lock_and_gets_missing_units": 10,
    "test_upgrade_installs_the_kernel_update_in_a_new_be_then_trial_boot_runs_it": 9,
    "test_h_be_from_snapshot_before_kernel_update_boots_older_kernel": 9,
    "test_c_activate_survives_refresh_reinit_and_initramfs_update": 8,
    "test_grub_a_b_c_d_e_f_with_secure_boot_on": 14,
    "test_activation_survives_reinit_refresh_and_refused_efi_writes": 7,
    "test_b_e_create_activate_reboot_then_renamed_inactive_be_boots_with_new_name": 7,
    "test_d_activate_once_then_back_also_after_a_crash": 7,
    "test_g_wiped_esp_reported_restored_and_other_disk_removed": 7,
    "test_i_power_off_during_activate_and_create": 7,
    "test_c2_without_efi_variable_loader_conf_and_hooks_carry_it": 6,
    "test_f_destroy_old_be_from_new_frees_its_unshared_files": 6,
    "test_grub_i_power_off_during_activate_and_create_on_the_legacy_bios_machine": 6,
    "test_guests_survive_a_rollback_and_a_be_from_before_the_move_uses_the_shared_state": 6,
    "test_apt_hook_snapshot_go_back_and_prune": 5,
    "test_deb_installs_runs_and_removes_cleanly_in_the_proxmox_like_machine": 5,
    "test_a_machine_boots_and_init_keeps_pve1_booting_now_from_beadm_entry": 4,
    "test_deb_builds_installs_with_its_depends_and_runs_on_debian_13_against_real_zfs": 4,
    "test_deb_contents": 0.2,
    "test_deb_control": 0.2,
}
DEFAULT_MINUTES = 6.0
# Passed (see the closing notes for when); variants of a scenario that CI runs, or the
# longest proofs of a feature whose main path CI runs: the watchdog hang (the trial's
# fallback is in CI through the failed check), the broken initrd with two tries, the room
# scenario, the upgrade (its pieces: apt hook, trial), h, c2 (c is in CI), reassert (c),
# GRUB's power loss (systemd-boot's i is in CI), GRUB a-f on the legacy-BIOS machine (CI runs
# them on the Secure Boot machine, which is made from the UEFI one in 5 minutes where the
# legacy one takes a 13-minute install of its own), f (destroy from the new BE: the lab tier
# destroys on real FAT and OpenZFS, GRUB's f is in CI).
LONG: frozenset[str] = frozenset({
    "test_trial_that_hangs_is_reset_by_the_watchdog_and_falls_back",
    "test_trial_broken_initrd_falls_back_and_power_loss_consumes_a_try",
    "test_room_kernel_update_and_initramfs_update_succeed_on_full_size_esps",
    "test_upgrade_installs_the_kernel_update_in_a_new_be_then_trial_boot_runs_it",
    "test_h_be_from_snapshot_before_kernel_update_boots_older_kernel",
    "test_c2_without_efi_variable_loader_conf_and_hooks_carry_it",
    "test_activation_survives_reinit_refresh_and_refused_efi_writes",
    "test_grub_i_power_off_during_activate_and_create_on_the_legacy_bios_machine",
    "test_grub_a_b_c_d_e_f_on_the_legacy_bios_machine",
    "test_f_destroy_old_be_from_new_frees_its_unshared_files",
    "test_trial_waits_for_a_held_lock_and_gets_missing_units",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.boot)
            name = getattr(item, "originalname", item.name)
            if name in LONG:
                item.add_marker(pytest.mark.long)
    items.sort(key=lambda it: -VM_MINUTES.get(getattr(it, "originalname", it.name),
                                               DEFAULT_MINUTES)
               if HERE in it.path.parents else 0.0)


@pytest.fixture(autouse=True)
def _can_boot(request: pytest.FixtureRequest) -> None:
    if HERE not in request.path.parents:
        return
    missing = [p for p in ("qemu-system-x86_64", "qemu-img") if shutil.which(p) is None]
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        missing.append("OVMF")
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        pytest.fail(f"boot tier needs {', '.join(missing)} (run lab/setup-host as root)",
                    pytrace=False)
