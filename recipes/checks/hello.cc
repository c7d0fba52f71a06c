// Toolchain check: iostream, exceptions and threads, in an empty root.
#include <iostream>
#include <stdexcept>
#include <thread>
#include <vector>
#include <atomic>

int main()
{
    std::atomic<int> sum{0};
    std::vector<std::thread> workers;
    for (int i = 1; i <= 4; ++i)
        workers.emplace_back([&sum, i] { sum += i; });
    for (auto &t : workers)
        t.join();
    try {
        throw std::runtime_error("caught");
    } catch (const std::exception &e) {
        std::cout << "hello from C++, threads " << sum << ", exception " << e.what() << std::endl;
    }
    return sum == 10 ? 0 : 1;
}
