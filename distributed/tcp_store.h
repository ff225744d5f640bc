// A key-value store over TCP for the rendezvous of a process group: rank 0 hosts it (TcpStoreServer) at
// masterAddr:masterPort, every rank (rank 0 included) talks to it through a TcpStoreClient. Gloo's rendezvous needs
// set / get / wait(keys, timeout); this Gloo version ships only file, hash and redis stores, hence this one.
//
// Every call has a deadline: a client retries the connect until its timeout (rank 0 may start last), a wait gives
// up with the keys still missing, and a dropped connection is an error at once. The server also tracks which ranks
// are connected: a rank whose process exits closes its connection, so after a failed collective the others can
// ask who left (departedRanks) and name it in their error.
//
// Wire format (both directions little-endian, one request then one reply per round trip):
//   request  u8 command, u32 key bytes, key, u32 value bytes, value
//   reply    u8 status (0 ok, 1 not found), u32 value bytes, value
// Commands: hello (key = the client's rank), set, get (not found if absent), check (key = '\n'-joined keys: ok
// when all are present), departed (reply value = '\n'-joined ranks whose connection closed without a goodbye),
// goodbye (the client leaves on purpose).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace weightnorm::distributed {

class TcpStoreServer {
 public:
  // Listens on host:port at once (port 0: any free port, see port()); throws a std::runtime_error naming the
  // address when it cannot bind.
  TcpStoreServer(const std::string& host, int port);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;
  int port() const { return port_; }

 private:
  void accept_loop();
  void serve(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mutex_;
  std::map<std::string, std::vector<char>> values_;
  std::vector<int> departed_ranks_;  // in the order their connections closed
  std::vector<int> client_fds_;
  std::vector<std::thread> workers_;
};

class TcpStoreClient {
 public:
  // Connects to host:port, retrying until `timeout` passes, then says hello as `rank`.
  TcpStoreClient(const std::string& host, int port, int rank, std::chrono::milliseconds timeout);
  ~TcpStoreClient();  // says goodbye when still connected
  TcpStoreClient(const TcpStoreClient&) = delete;
  TcpStoreClient& operator=(const TcpStoreClient&) = delete;

  void set(const std::string& key, const std::vector<char>& value);
  // Waits for the key (up to timeout) and returns its value.
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout);
  // Returns the keys still missing when `timeout` passed (empty: all arrived).
  std::vector<std::string> wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  // Ranks whose connection to the store closed without a goodbye (their process exited or crashed), first first:
  // after one rank dies, others may exit on their own errors, so the first is the likely cause.
  std::vector<int> departed_ranks();
  std::string address() const { return host_ + ":" + std::to_string(port_); }

 private:
  struct Reply {
    bool found;
    std::vector<char> value;
  };
  Reply request(char command, const std::string& key, const std::vector<char>& value);

  std::string host_;
  int port_;
  int fd_ = -1;
  std::mutex mutex_;  // one request at a time on the socket
};

}  // namespace weightnorm::distributed
