// lmsav's own YARA test rule; reported as YARA.lmsav_test_yara
rule lmsav_test_yara
{
    strings:
        $a = { 4c 4d 53 41 56 2d 59 41 52 41 2d 54 45 53 54 2d 53 41 4d 50 4c 45 }
    condition:
        $a
}
