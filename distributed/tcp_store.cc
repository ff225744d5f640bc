// The rendezvous store over TCP (see tcp_store.h for the protocol and why it exists).
#include "tcp_store.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace weightnorm::distributed {
namespace {

enum Command : char { kHello = 'h', kSet = 's', kGet = 'g', kCheck = 'c', kDeparted = 'd', kGoodbye = 'b' };

std::string errno_text() { return std::strerror(errno); }

// False when the peer closed the connection or the socket failed (the caller decides what that means).
bool send_all(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

bool recv_all(int fd, void* data, size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

bool send_bytes(int fd, const char* data, size_t bytes) {
  const uint32_t length = static_cast<uint32_t>(bytes);
  return send_all(fd, &length, sizeof length) && (bytes == 0 || send_all(fd, data, bytes));
}

// Keys and values are small (addresses, rank lists): anything over 64 MiB is a corrupt or foreign stream.
bool recv_bytes(int fd, std::vector<char>& out) {
  uint32_t length = 0;
  if (!recv_all(fd, &length, sizeof length) || length > (64u << 20)) return false;
  out.resize(length);
  return length == 0 || recv_all(fd, out.data(), length);
}

std::vector<std::string> split_lines(const std::vector<char>& joined) {
  std::vector<std::string> parts;
  std::string current;
  for (char c : joined) {
    if (c == '\n') {
      parts.push_back(current);
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) parts.push_back(current);
  return parts;
}

addrinfo* resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* result = nullptr;
  const std::string service = std::to_string(port);
  const int status = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &result);
  if (status != 0) {
    throw std::runtime_error("cannot resolve the store address '" + host + ":" + service + "': " + gai_strerror(status));
  }
  return result;
}

}  // namespace

TcpStoreServer::TcpStoreServer(const std::string& host, int port) {
  addrinfo* addresses = resolve(host, port, true);
  std::string last_error = "no address";
  for (addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      listen_fd_ = fd;
      sockaddr_storage bound{};
      socklen_t length = sizeof bound;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
      port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                          : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      break;
    }
    last_error = errno_text();
    ::close(fd);
  }
  ::freeaddrinfo(addresses);
  if (listen_fd_ < 0) {
    throw std::runtime_error("rank 0 cannot host the rendezvous store on " + host + ":" + std::to_string(port) + ": " +
                             last_error + " (is another job using this port? choose another masterPort)");
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

TcpStoreServer::~TcpStoreServer() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  acceptor_.join();
  {
    // Wakes every worker blocked in recv; they then exit.
    std::lock_guard<std::mutex> lock(mutex_);
    for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (std::thread& worker : workers_) worker.join();
  for (int fd : client_fds_) ::close(fd);
}

void TcpStoreServer::accept_loop() {
  while (!stopping_) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // the listening socket was shut down
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    client_fds_.push_back(fd);
    workers_.emplace_back([this, fd] { serve(fd); });
  }
}

void TcpStoreServer::serve(int fd) {
  int rank = -1;
  bool said_goodbye = false;
  std::vector<char> key, value;
  for (;;) {
    char command = 0;
    if (!recv_all(fd, &command, 1) || !recv_bytes(fd, key) || !recv_bytes(fd, value)) break;
    bool found = true;
    std::vector<char> reply;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      switch (command) {
        case kHello: {
          // Anything but a rank number is a foreign client on this port: ignore it (an exception here would end
          // the whole process, since this runs on the store's own thread).
          const std::string text(key.begin(), key.end());
          char* end = nullptr;
          const long parsed = std::strtol(text.c_str(), &end, 10);
          if (text.empty() || *end != '\0' || parsed < 0 || parsed > 1 << 20) {
            found = false;
            break;
          }
          rank = static_cast<int>(parsed);
          departed_ranks_.erase(std::remove(departed_ranks_.begin(), departed_ranks_.end(), rank), departed_ranks_.end());
          break;
        }
        case kSet:
          values_[std::string(key.begin(), key.end())] = value;
          break;
        case kGet: {
          auto it = values_.find(std::string(key.begin(), key.end()));
          found = it != values_.end();
          if (found) reply = it->second;
          break;
        }
        case kCheck:
          for (const std::string& k : split_lines(key)) found = found && values_.count(k) > 0;
          break;
        case kDeparted:
          for (int r : departed_ranks_) {
            const std::string text = std::to_string(r) + "\n";
            reply.insert(reply.end(), text.begin(), text.end());
          }
          break;
        case kGoodbye:
          said_goodbye = true;
          break;
        default:
          found = false;
      }
    }
    const char status = found ? 0 : 1;
    if (!send_all(fd, &status, 1) || !send_bytes(fd, reply.data(), reply.size())) break;
    if (said_goodbye) break;
  }
  if (rank >= 0 && !said_goodbye && !stopping_) {
    std::lock_guard<std::mutex> lock(mutex_);
    departed_ranks_.push_back(rank);
  }
}

TcpStoreClient::TcpStoreClient(const std::string& host, int port, int rank, std::chrono::milliseconds timeout)
    : host_(host), port_(port) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error;
  // Rank 0 may not listen yet: retry until the deadline, with a short pause between tries.
  while (fd_ < 0) {
    addrinfo* addresses = resolve(host, port, false);
    for (addrinfo* a = addresses; a != nullptr && fd_ < 0; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
      } else {
        last_error = errno_text();
        ::close(fd);
      }
    }
    ::freeaddrinfo(addresses);
    if (fd_ >= 0) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("rank " + std::to_string(rank) + " could not reach the rendezvous store that rank 0 hosts at " +
                               address() + " within " + std::to_string(timeout.count()) + " ms (" + last_error +
                               "): is rank 0 running, and are masterAddr/masterPort the same on every rank?");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // The server answers every request at once; a reply that takes longer than the timeout means rank 0 is stuck.
  timeval receive_timeout{};
  receive_timeout.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  receive_timeout.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
  request(kHello, std::to_string(rank), {});
}

TcpStoreClient::~TcpStoreClient() {
  if (fd_ < 0) return;
  try {
    request(kGoodbye, "", {});
  } catch (...) {
    // rank 0 already gone: nothing to say goodbye to
  }
  ::close(fd_);
}

TcpStoreClient::Reply TcpStoreClient::request(char command, const std::string& key, const std::vector<char>& value) {
  std::lock_guard<std::mutex> lock(mutex_);
  Reply reply{false, {}};
  char status = 1;
  if (!send_all(fd_, &command, 1) || !send_bytes(fd_, key.data(), key.size()) ||
      !send_bytes(fd_, value.data(), value.size()) || !recv_all(fd_, &status, 1) || !recv_bytes(fd_, reply.value)) {
    throw std::runtime_error("lost the connection to the rendezvous store at " + address() +
                             " (rank 0, which hosts it, has exited or is stuck)");
  }
  reply.found = status == 0;
  return reply;
}

void TcpStoreClient::set(const std::string& key, const std::vector<char>& value) { request(kSet, key, value); }

std::vector<char> TcpStoreClient::get(const std::string& key, std::chrono::milliseconds timeout) {
  const std::vector<std::string> missing = wait({key}, timeout);
  if (!missing.empty()) {
    throw std::runtime_error("key '" + key + "' did not appear in the rendezvous store within " +
                             std::to_string(timeout.count()) + " ms");
  }
  return request(kGet, key, {}).value;
}

std::vector<std::string> TcpStoreClient::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    std::vector<std::string> missing;
    for (const std::string& key : keys) {
      if (!request(kCheck, key, {}).found) missing.push_back(key);
    }
    if (missing.empty() || std::chrono::steady_clock::now() >= deadline) return missing;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

std::vector<int> TcpStoreClient::departed_ranks() {
  std::vector<int> ranks;
  for (const std::string& text : split_lines(request(kDeparted, "", {}).value)) ranks.push_back(std::stoi(text));
  return ranks;
}

}  // namespace weightnorm::distributed
