/* Cross toolchain check: a C program for the target, run under qemu in an empty root.
   Says which machine it ran as and which glibc it loaded. */
#include <gnu/libc-version.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

int main(void)
{
    struct utsname u;
    if (uname(&u) != 0)
        return 1;
    printf("hello from C on %s, glibc %s\n", u.machine, gnu_get_libc_version());
    return 0;
}
