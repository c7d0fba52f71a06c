/* Toolchain check: a C program built and run in an empty root. */
#include <stdio.h>
#include <string.h>
#include <locale.h>

int main(void)
{
    if (!setlocale(LC_ALL, "C.UTF-8")) {
        puts("C.UTF-8 locale missing");
        return 1;
    }
    printf("hello from C, %zu\n", strlen("dappdeps"));
    return 0;
}
